"""prefork's worker in the test process: the request handler and the connection state machine
without a server process, for PEP 3333 cases that take milliseconds instead of a fork.

``InProcessServer`` builds a real ``Worker`` (the command line's settings, a scoreboard slot, a
listening socket it never accepts on) and never runs its loop. Each client connection is a
``socket.socketpair()``: one end becomes the worker's ``Connection``, the other is the test's.
``pump`` does what the loop would: it hands bytes the client wrote to ``Protocol.on_readable``,
lets a parked response go on (``Protocol.advance``) as the client reads, and stops when nothing
moves any more. Everything runs in one thread, so "nothing moves" is exact, not a timeout.

What it cannot show needs tests/integration: --threads, TLS, unix-socket and TCP peers' real
addresses, signals, timeouts that the loop's tick enforces, anything about processes.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import sys
import time
from pathlib import Path

from httpclient import RawResponse, read_response

from prefork.config.appload import load_app
from prefork.config.cli import load_config
from prefork.workers.connection import WRITE, Connection
from prefork.workers.scoreboard import Scoreboard
from prefork.workers.worker import Worker

APPS = Path(__file__).resolve().parent / "apps"
#: What the worker's Connection says the peer is: a loopback TCP client.
PEER = ("127.0.0.1", "40000")


class _Records(logging.Handler):
    """The error log's lines, as the log file would have them (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class Client:
    """The test's end of one connection. ``send`` then ``responses``/``wire`` read what the
    worker answered; ``closed`` says whether the worker closed its end."""

    def __init__(self, server: InProcessServer, sock: socket.socket, conn: Connection) -> None:
        self.server = server
        self.sock = sock
        self.conn = conn
        self.received = bytearray()
        self.closed = False
        self._read = 0  # how much of ``received`` responses() handed out already

    def send(self, data: bytes, *, read: bool = True) -> Client:
        """Write ``data`` and let the worker serve it. With ``read=False`` the client does not
        read, so a response bigger than the socket buffer stays parked in the worker."""
        self.server.pump(self, data, read=read)
        return self

    def read_all(self) -> None:
        """Read whatever the worker has for us, letting parked responses go on."""
        self.server.pump(self, b"", read=True)

    def wire(self) -> bytes:
        """Every byte received so far."""
        return bytes(self.received)

    def responses(self, count: int, head_only: bool = False) -> list[RawResponse]:
        """The next ``count`` responses; fails if they are not all there."""
        stream = io.BytesIO(bytes(self.received[self._read:]))
        result = [read_response(stream, head_only=head_only) for _ in range(count)]
        self._read += stream.tell()
        return result

    def response(self, head_only: bool = False) -> RawResponse:
        (response,) = self.responses(1, head_only=head_only)
        return response

    def rest(self) -> bytes:
        """What came after the responses read so far."""
        return bytes(self.received[self._read:])

    def close(self) -> None:
        self.sock.close()
        if self.server.worker.conns.get(self.conn.fd) is self.conn:
            self.server.pump(self, b"", read=False)  # the worker sees EOF and closes its end


class InProcessServer:
    """A worker for ``APP`` with the settings of ``args`` (as on the command line)."""

    def __init__(self, app: str, *args: str) -> None:
        self.cfg = load_config([*args, app], environ={})
        self._added_path = str(APPS) not in sys.path
        if self._added_path:
            sys.path.insert(0, str(APPS))
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.board = Scoreboard(capacity=1)
        slot = self.board.slot(self.board.claim(1, time.monotonic()))
        # wsgi.errors is sys.stderr when the worker starts: in a worker process that is the real
        # stderr, here it would be pytest's capture.
        captured, sys.stderr = sys.stderr, sys.__stderr__
        try:
            self.worker = Worker(self.cfg, load_app(app), [self.listener], slot, ppid=os.getppid())
        finally:
            sys.stderr = captured
        self.records = _Records()
        self._logger = logging.getLogger("prefork.error")
        self._level = self._logger.level
        self._logger.addHandler(self.records)
        self._logger.setLevel(logging.DEBUG)
        self.clients: list[Client] = []

    def connect(self) -> Client:
        theirs, ours = socket.socketpair()
        theirs.setblocking(False)
        ours.setblocking(False)
        listener = self.worker.listeners[self.listener.fileno()]
        conn = Connection(theirs, listener.environ, *PEER, self.worker._trusts(PEER[0]),
                          self.worker.policy, time.monotonic() + self.cfg.head_timeout)
        self.worker.conns[conn.fd] = conn
        client = Client(self, ours, conn)
        self.clients.append(client)
        return client

    def request(self, data: bytes) -> Client:
        """A new connection that sends ``data`` and reads everything the worker answers."""
        return self.connect().send(data)

    def pump(self, client: Client, data: bytes, read: bool) -> None:
        """Move bytes both ways until neither side can make progress."""
        protocol = self.worker.protocol
        conn = client.conn
        pending = memoryview(data)
        while True:
            moved = False
            if pending:
                try:
                    sent = client.sock.send(pending)
                except BlockingIOError:
                    sent = 0
                pending = pending[sent:]
                moved = sent > 0
            if self.worker.conns.get(conn.fd) is conn:
                if conn.state == WRITE:
                    before = conn.out.pending() if conn.out is not None else -1
                    protocol.advance(conn, time.monotonic())
                    after = conn.out.pending() if conn.out is not None else -1
                    moved = moved or after != before or conn.state != WRITE
                else:
                    state, buffered = conn.state, len(conn.buf)
                    before = _readable(conn.sock)
                    if before:
                        protocol.on_readable(conn)
                        moved = True
                    elif conn.state != state or len(conn.buf) != buffered:
                        moved = True
            if read and not client.sock._closed:
                moved = self._receive(client) or moved
            if not moved:
                return

    @staticmethod
    def _receive(client: Client) -> bool:
        got = False
        while True:
            try:
                chunk = client.sock.recv(1 << 20)
            except BlockingIOError:
                return got
            except ConnectionResetError:
                client.closed = True
                return got
            if not chunk:
                client.closed = True
                return got
            client.received += chunk
            got = True

    def log(self) -> str:
        return "\n".join(self.records.lines)

    def close(self) -> None:
        for client in self.clients:
            if not client.sock._closed:
                client.sock.close()
        for conn in list(self.worker.conns.values()):
            self.worker.close(conn)
        self.worker.epoll.close()
        self.listener.close()
        self._logger.removeHandler(self.records)
        self._logger.setLevel(self._level)
        if self._added_path:
            sys.path.remove(str(APPS))


def _readable(sock: socket.socket) -> bool:
    """Bytes (or EOF) wait on the worker's end."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        pass  # a reset: on_readable sees it too
    return True
