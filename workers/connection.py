"""One client connection as the worker sees it: a non-blocking socket, its receive buffer, and
the per-connection part of the WSGI environ.

Sockets stay non-blocking for their whole life so the common case costs exactly one ``recv``
and one ``send`` per request. Only when the kernel cannot take or give bytes right away (a slow
client, a large response, a body still on its way) do we wait — with ``poll`` on that one fd,
bounded by the I/O timeout, beating the heartbeat whenever bytes move so that a long download
to a slow but live client is never mistaken for a hung worker.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

RECV_SIZE: Final = 65536
#: Below this, joining head and body into one buffer is cheaper than a scatter-gather send.
JOIN_LIMIT: Final = 65536


class ClientDisconnected(ConnectionError):
    """The client went away mid-request. Not the app's fault and not a server error: it is
    logged at debug level and the connection is dropped."""


class ClientTimeout(TimeoutError):
    """The client stopped sending or receiving for longer than the I/O timeout."""


class IOPolicy:
    """What every connection of a worker shares: how long a stalled client may hold a request,
    and how to tell the arbiter we are still alive while we wait for it."""

    __slots__ = ("timeout", "heartbeat")

    def __init__(self, timeout: float, heartbeat: Callable[[float], None]) -> None:
        self.timeout = timeout
        self.heartbeat = heartbeat


class Connection:
    """A client connection. ``buf`` holds received bytes not yet consumed by the parser or the
    request body; ``deadline`` is when the worker closes it if nothing more happens (head
    timeout while a head is incomplete, keep-alive timeout while idle)."""

    __slots__ = ("sock", "fd", "buf", "environ", "trusted", "deadline", "policy", "_poller")

    #: What a non-blocking send raises when the kernel cannot take bytes now (TLS adds its own).
    WOULD_BLOCK: tuple[type[OSError], ...] = (BlockingIOError,)

    def __init__(self, sock: socket.socket, environ: dict[str, Any], trusted: bool,
                 policy: IOPolicy, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.environ = environ
        self.trusted = trusted
        self.policy = policy
        self.deadline = deadline
        self._poller: select.poll | None = None

    # -- sending -----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send all of ``data``; the first attempt is a single non-blocking ``send``."""
        try:
            sent = self.sock.send(data)
        except self.WOULD_BLOCK:
            sent = 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        if sent < len(data):
            self._send_rest(memoryview(data)[sent:])

    def send_parts(self, parts: Sequence[bytes]) -> None:
        """Send several buffers as one write: joined when small; when large, without copying
        a big body just to glue a header onto it (``_send_large``)."""
        total = 0
        for part in parts:
            total += len(part)
        if total <= JOIN_LIMIT:
            self.send(b"".join(parts))
        else:
            self._send_large(parts)

    def _send_large(self, parts: Sequence[bytes]) -> None:
        """Scatter-gather: one sendmsg for all the parts."""
        try:
            sent = self.sock.sendmsg(parts)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientDisconnected(str(exc)) from exc
        for part in parts:
            if sent >= len(part):
                sent -= len(part)
                continue
            self._send_rest(memoryview(part)[sent:])
            sent = 0

    def _send_rest(self, view: memoryview) -> None:
        """The slow path: wait for the client to take the rest, as long as it keeps taking."""
        sock = self.sock
        while view:
            self._wait(select.POLLOUT)
            try:
                sent = sock.send(view)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            view = view[sent:]

    def sendfile(self, fileno: int, offset: int, count: int) -> int:
        """Zero-copy file body (``wsgi.file_wrapper``); returns the bytes sent, which is less
        than ``count`` only if the file was shorter than announced."""
        sent_total = 0
        while sent_total < count:
            try:
                sent = os.sendfile(self.fd, fileno, offset + sent_total, count - sent_total)
            except BlockingIOError:
                self._wait(select.POLLOUT)
                continue
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            if sent == 0:
                break
            sent_total += sent
        return sent_total

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
        reads a body. EOF here means the client gave up mid-request."""
        while True:
            try:
                data = self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                self._wait(select.POLLIN)
                continue
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from exc
            if not data:
                raise ClientDisconnected("client closed the connection during the request body")
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

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
