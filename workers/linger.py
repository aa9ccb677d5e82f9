"""Lingering close: after an early response, read and discard what the client still sends.

A server that answers before it has read the whole request — a 413 for a body over the limit,
a 400 for a malformed one — and then closes its socket with bytes unread (or still arriving)
makes the kernel answer them with a reset. A client still sending its body then fails on its
next write, and most report that (``ConnectionResetError``, "connection reset") instead of
reading the response that is waiting for them; Python's own ``http.client`` does. nginx's
``lingering_close`` is the cure used here: shut down our side of the connection (the client
sees the FIN after the response), keep reading and throwing away what arrives until the
client closes, falls silent for ``LINGER_IDLE`` seconds, or ``--lingering-time`` has passed in
all. A lingering socket holds an fd and nothing else: no buffer, no state, no worker.

Over TLS the same: ``SSLSocket.shutdown`` leaves the TLS layer (no close_notify, as a plain
close sends none either) and shuts the TCP connection down, and what arrives after is read raw
and thrown away — the answer was a complete, length-framed response already.
"""

from __future__ import annotations

import select
import socket
from typing import Final

#: Seconds of silence after which a lingering client is taken to have given up sending
#: (nginx's lingering_timeout default); never more than --lingering-time.
LINGER_IDLE: Final = 5.0
#: Bytes read per recv, and reads per wakeup: a client that sends fast cannot keep the loop
#: here longer than a few reads before the other connections get their turn.
DISCARD_SIZE: Final = 65536
DISCARD_READS: Final = 4


class Lingerer:
    """The worker's lingering sockets, by fd: each with when it is dropped if silent, and when
    it is dropped in any case."""

    def __init__(self, epoll: select.epoll, lingering_time: float) -> None:
        self.epoll = epoll
        self.total = lingering_time
        self.idle = min(LINGER_IDLE, lingering_time)
        self.socks: dict[int, tuple[socket.socket, float, float]] = {}
        #: Bytes read and dropped since the worker last published its traffic: they were
        #: received from clients as much as the requests' own (prefork_received_bytes_total).
        self.received = 0

    def start(self, sock: socket.socket, registered: bool, now: float) -> bool:
        """Linger on ``sock`` (its response sent); False if it cannot, and the caller closes
        it: lingering is off, or the socket is already shut down or reset."""
        if not self.total:
            return False
        fd = sock.fileno()
        try:
            sock.shutdown(socket.SHUT_WR)
            if registered:
                self.epoll.modify(fd, select.EPOLLIN)
            else:
                self.epoll.register(fd, select.EPOLLIN)
        except OSError:
            return False
        self.socks[fd] = (sock, now + self.idle, now + self.total)
        return True

    def on_readable(self, fd: int, now: float) -> None:
        """Discard what arrived; close at the client's end of stream (or a reset), else it
        has another LINGER_IDLE from now (within its total)."""
        sock, _, end = self.socks[fd]
        if self._discard(sock):
            self.socks[fd] = (sock, min(now + self.idle, end), end)
        else:
            self._close(fd)

    def expire(self, now: float) -> None:
        """Drop the sockets silent for too long, or lingering for too long in all."""
        for fd in [fd for fd, (_, deadline, _) in self.socks.items() if deadline <= now]:
            self._close(fd)

    def close_all(self) -> None:
        for fd in list(self.socks):
            self._close(fd)

    def _close(self, fd: int) -> None:
        sock, _, _ = self.socks.pop(fd)
        sock.close()  # (closing unregisters it from epoll)

    def _discard(self, sock: socket.socket) -> bool:
        """Read and drop what the kernel holds, a few reads at most (a client still sending
        goes on at the next wakeup); False at the client's end of stream or a reset."""
        for _ in range(DISCARD_READS):
            try:
                data = sock.recv(DISCARD_SIZE)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            self.received += len(data)
        return True
