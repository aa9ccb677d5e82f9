"""One client connection as the worker sees it: a non-blocking socket, the bytes received and
not yet consumed, and the bytes of a response the client has not taken yet.

Sending is *write-through, then park*: each piece of a response is offered to the kernel at
once (the common response fits the socket buffer: one ``send``, nothing else); what the kernel
cannot take now is parked — in memory up to the per-connection and per-worker limits, then in
a spool file — and the event loop sends it when epoll reports the socket writable. So
``send`` never waits, and the application is done as soon as it has produced its response,
however slowly the client reads. A file (``wsgi.file_wrapper``) is parked as a file segment
and goes out by ``sendfile`` from the loop, never copied.

Only a response that asked to be streamed (``X-Accel-Buffering: no``), that outgrew the
spool limit, or whose spool file cannot be made or written (out of fds, disk full) switches
the connection to *synchronous* sending: then ``send`` waits for the client, with ``poll`` on
this one fd, bounded by the I/O timeout, and beats the heartbeat whenever bytes move, so a
long download to a slow but live client is not mistaken for a hung worker. A request body
read by the app as it arrives (``--no-request-buffering``) waits the same way.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from .buffers import Budget, open_spool, spool_write

if TYPE_CHECKING:
    from .buffers import RequestBuffer, WholeBody
    from .exchange import Exchange
    from .http import Request

RECV_SIZE: Final = 65536
#: Below this, joining head and body into one buffer is cheaper than a scatter-gather send.
JOIN_LIMIT: Final = 65536
#: Parked memory chunks handed to one sendmsg, at most.
SENDMSG_PARTS: Final = 64
#: Most bytes one sendfile call is asked for, so one connection cannot monopolise a loop turn.
SENDFILE_CHUNK: Final = 4 << 20

# The states of a connection (see workers/protocol.py).
HEAD: Final = 0     # waiting for (the rest of) a request head; idle keep-alive is HEAD, no bytes
BODY: Final = 1     # the loop collects the request body
APP: Final = 2      # the application runs (in a pool thread with --threads)
WRITE: Final = 3    # the loop sends the parked rest of the response
STATE_NAMES: Final = ("head", "body", "app", "write")


class ClientDisconnected(ConnectionError):
    """The client went away mid-request. Not the app's fault and not a server error: it is
    logged at debug level and the connection is dropped."""


class ClientTimeout(TimeoutError):
    """The client stopped sending or receiving for longer than the I/O timeout."""


class IOPolicy:
    """What every connection of a worker shares: how long a stalled client may hold a
    synchronous wait, how to tell the arbiter we are alive meanwhile, and how much of a
    response may be parked where."""

    __slots__ = ("timeout", "heartbeat", "budget", "park_limit", "spool_max")

    def __init__(self, timeout: float, heartbeat: Callable[[float], None], budget: Budget,
                 park_limit: int, spool_max: int) -> None:
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.budget = budget
        self.park_limit = park_limit
        self.spool_max = spool_max


class Parked:
    """The rest of a response the client has not taken yet, in order: memory chunks (bytes /
    memoryview, counted in the worker's budget) and file segments ([fd, offset, count]
    lists: a file_wrapper file, or this response's spool file)."""

    __slots__ = ("items", "memory", "spool_fd", "spooled")

    def __init__(self) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.memory = 0     # bytes of memory chunks
        self.spool_fd = -1  # the spool file, once memory is full
        self.spooled = 0    # bytes written to it

    def pending(self) -> int:
        """Bytes parked and not sent yet."""
        total = self.memory
        for item in self.items:
            if type(item) is list:
                total += item[2]
        return total

    def release(self, budget: Budget) -> None:
        """Give back the memory and the spool file (sent, or never to be)."""
        budget.give(self.memory)
        self.memory = 0
        if self.spool_fd >= 0:
            os.close(self.spool_fd)
            self.spool_fd = -1


class Connection:
    """A client connection.

    ``buf`` holds received bytes not yet consumed by the parser or the request body.
    ``environ`` is the listener's shared environ (never modified); ``remote_addr`` and
    ``remote_port`` are this peer's (or what its PROXY header says). ``deadline`` is when the
    worker gives up on it in its current ``state``; ``events`` is the epoll mask it waits
    with (applied when it is ``registered``). ``req``, ``body`` and ``exchange`` belong to the request in progress.
    """

    __slots__ = ("sock", "fd", "buf", "environ", "remote_addr", "remote_port", "trusted",
                 "deadline", "policy", "state", "head_started", "head_parsed_at", "events", "registered", "req",
                 "body", "exchange", "out", "sync", "_poller")

    #: What a non-blocking send raises when the kernel cannot take bytes now (TLS adds its own).
    WOULD_BLOCK: tuple[type[OSError], ...] = (BlockingIOError,)
    #: Send flags for a response's last bytes when the connection closes right after them:
    #: MSG_MORE has the kernel hold them until close(), which sends them with the FIN in one
    #: segment — a packet and an ACK fewer per connection, the `Connection: close` path's
    #: biggest saving. (TLS passes no flags; its close_notify comes between anyway.)
    FIN_FLAGS: int = socket.MSG_MORE

    def __init__(self, sock: socket.socket, environ: dict[str, Any], remote_addr: str,
                 remote_port: str, trusted: bool, policy: IOPolicy, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.environ = environ
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        self.trusted = trusted
        self.policy = policy
        self.deadline = deadline
        self.state = HEAD
        self.head_started = False  # the bytes of a head are arriving: --head-timeout runs
        self.head_parsed_at = 0    # buffered bytes when a head arriving in pieces was last parsed
        self.events = select.EPOLLIN
        self.registered = False  # in epoll: not before its first pass (see Worker._accept)
        self.req: Request | None = None
        self.body: RequestBuffer | WholeBody | None = None
        self.exchange: Exchange | None = None
        self.out: Parked | None = None
        self.sync = False
        self._poller: select.poll | None = None

    # -- sending: write-through, then park ----------------------------------------------------

    def send(self, data: bytes, flags: int = 0) -> None:
        """Send ``data`` as far as the kernel takes it now; park the rest."""
        if self.out is not None or self.sync:
            self._queue(data)
            return
        try:
            sent = self.sock.send(data, flags)
        except self.WOULD_BLOCK:
            sent = 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        if sent < len(data):
            self._park(memoryview(data)[sent:] if sent else data)

    def send_parts(self, parts: Sequence[bytes], flags: int = 0) -> None:
        """Send several buffers as one write: joined when small; when large, without copying
        a big body just to glue a header onto it (``flags`` then do not apply)."""
        total = 0
        for part in parts:
            total += len(part)
        if total <= JOIN_LIMIT:
            self.send(b"".join(parts), flags)
            return
        if self.out is not None or self.sync:
            for part in parts:
                self._queue(part)
            return
        sent = self._sendmsg(parts)
        for part in parts:
            if sent >= len(part):
                sent -= len(part)
                continue
            self._park(memoryview(part)[sent:] if sent else part)
            sent = 0

    def _sendmsg(self, parts: Sequence[Any]) -> int:
        """One scatter-gather send; 0 when the kernel takes nothing now."""
        try:
            return self.sock.sendmsg(parts)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc

    def send_file(self, fileno: int, offset: int, count: int) -> bool:
        """A file body (``wsgi.file_wrapper``) by ``sendfile``, as far as the kernel takes it
        now; the rest is parked as a file segment. True when something was parked: the file
        must then stay open until the response is flushed."""
        segment = [fileno, offset, count]
        if self.out is None and not self.sync and self._send_segment(segment):
            return False
        self._append(segment)
        if self.sync:
            self.flush_waiting()
            return False
        return True

    def _queue(self, data: bytes | memoryview) -> None:
        """Behind what is parked already (order is everything); synchronous: sent now."""
        if self.sync:
            self.flush_waiting()
            self._send_waiting(memoryview(data))
        else:
            self._park(data)

    def _park(self, data: bytes | memoryview) -> None:
        """Keep ``data`` for the loop to send: memory while within the limits, else spool."""
        size = len(data)
        policy = self.policy
        out = self.out
        if out is None:
            out = self.out = Parked()
        if out.spool_fd < 0 and out.memory + size <= policy.park_limit and policy.budget.fits(size):
            out.items.append(data)
            out.memory += size
            policy.budget.take(size)
            return
        if out.spooled + size > policy.spool_max or not self._spool(out, data):
            # An endless response to a slow client must not fill the disk, and a spool file we
            # cannot have must not cost the response: from here on the app waits for the
            # client, as a synchronous server would.
            self.sync = True
            self._queue(data)
            return
        items = out.items
        last = items[-1] if items else None
        if type(last) is list and last[0] == out.spool_fd:
            last[2] += size
        else:
            items.append([out.spool_fd, out.spooled, size])
        out.spooled += size

    def _spool(self, out: Parked, data: bytes | memoryview) -> bool:
        """Write ``data`` to the response's spool file (made on first use); False, with a
        warning, when the file cannot be made (out of fds) or written (disk full). Bytes a
        failed write left in the file are never sent: no segment covers them."""
        budget = self.policy.budget
        try:
            if out.spool_fd < 0:
                out.spool_fd = open_spool(budget.tmp_dir)
            spool_write(out.spool_fd, data)
        except OSError as exc:
            budget.spool_warnings.report(
                exc, f"the response to {self.remote_addr or 'a unix socket'} goes on "
                     "synchronously (the app waits for the client)")
            return False
        return True

    def _append(self, item: Any) -> None:
        if self.out is None:
            self.out = Parked()
        self.out.items.append(item)

    def flush(self) -> int:
        """Send parked bytes as the socket takes them, without waiting. Returns 0 when all
        are sent (and the parking is gone), else the epoll event to wait for. Raises
        ClientDisconnected."""
        out = self.out
        if out is None:
            return 0
        items = out.items
        while items:
            item = items[0]
            if type(item) is list:
                if not self._send_segment(item):
                    return select.EPOLLOUT
                items.popleft()
                continue
            parts = []
            for part in items:  # the memory chunks up to the next file segment
                if type(part) is list or len(parts) == SENDMSG_PARTS:
                    break
                parts.append(part)
            sent = self._send_chunks(parts)
            if sent < 0:
                return -sent
            out.memory -= sent
            self.policy.budget.give(sent)
            while sent:
                head = items[0]
                if sent < len(head):
                    items[0] = memoryview(head)[sent:]
                    return select.EPOLLOUT
                sent -= len(head)
                items.popleft()
        out.release(self.policy.budget)
        self.out = None
        return 0

    def _send_chunks(self, parts: list[Any]) -> int:
        """Bytes of ``parts`` sent now; a negative epoll event when nothing could be sent."""
        sent = self._sendmsg(parts) if len(parts) > 1 else self._send_now(parts[0])
        return sent if sent else -select.EPOLLOUT

    def _send_now(self, data: Any) -> int:
        try:
            return self.sock.send(data)
        except self.WOULD_BLOCK:
            return 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc

    def _send_segment(self, item: list[int]) -> bool:
        """Send one parked file segment by sendfile; True when it is all sent."""
        fileno, offset, count = item
        while count:
            try:
                sent = os.sendfile(self.fd, fileno, offset, min(count, SENDFILE_CHUNK))
            except BlockingIOError:
                break
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            if sent == 0:
                raise ClientDisconnected("the file is shorter than the response says")
            offset += sent
            count -= sent
        item[1], item[2] = offset, count
        return not count

    def flush_waiting(self) -> None:
        """Send everything parked, waiting for the client as long as it keeps taking bytes
        (synchronous mode)."""
        while True:
            events = self.flush()
            if not events:
                return
            self._wait_for(events)

    def _send_waiting(self, view: memoryview) -> None:
        """Send all of ``view``, waiting for the client (synchronous mode). Through
        _send_chunks, so a TLS "want read" waits for POLLIN rather than spin on POLLOUT."""
        while view:
            sent = self._send_chunks([view])
            if sent > 0:
                view = view[sent:]
            else:
                self._wait_for(-sent)

    def _wait_for(self, events: int) -> None:
        """_wait for the epoll event a non-blocking send asked for."""
        self._wait(select.POLLIN if events == select.EPOLLIN else select.POLLOUT)

    def end_response(self) -> None:
        """The response is out, or abandoned: drop what is parked, back to write-through."""
        self.sync = False
        if self.out is not None:
            self.out.release(self.policy.budget)
            self.out = None

    # -- receiving ---------------------------------------------------------------------------

    def recv_available(self) -> bytes | None:
        """What the kernel has for us now: bytes, ``b""`` on EOF, ``None`` if nothing yet."""
        try:
            return self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def recv_wait(self) -> bytes:
        """Block (bounded by the I/O timeout) until the client sends more; used while the app
        reads an unbuffered body. EOF here means the client gave up mid-request."""
        while True:
            try:
                data = self.sock.recv(RECV_SIZE)
            except self.WOULD_BLOCK as exc:
                self._wait(self._waits_for(exc))
                continue
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            if not data:
                raise ClientDisconnected("client closed the connection during the request body")
            return self._complete(data)

    def _waits_for(self, exc: OSError) -> int:
        """The poll event a "try again" from a read waits for."""
        return select.POLLIN

    def _complete(self, data: bytes) -> bytes:
        """What a read returned, plus what the transport holds beyond it (TLS: see there)."""
        return data

    def _wait(self, event: int) -> None:
        """Wait until the socket is ready for ``event`` or raise ClientTimeout. Each wakeup
        beats the heartbeat: a client that keeps moving bytes keeps us alive."""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.fd, select.POLLIN | select.POLLOUT)
        poller.modify(self.fd, event)
        policy = self.policy
        if not poller.poll(policy.timeout * 1000):
            raise ClientTimeout(f"client stalled for more than {policy.timeout:g}s")
        policy.heartbeat(time.monotonic())

    def release(self) -> None:
        """Give back what the connection holds besides its socket: the parked response and
        the request body's buffer or spool file."""
        if self.out is not None:
            self.end_response()
        if self.body is not None:
            self.body.close()
            self.body = None

    def close(self) -> None:
        """Close the socket and give back whatever the connection still held."""
        self.release()
        try:
            self.sock.close()
        except OSError:
            pass
