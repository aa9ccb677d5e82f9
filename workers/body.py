"""``wsgi.input`` read from the socket as the client sends it: ``--no-request-buffering``.

By default the event loop collects a request body before the app runs (workers/buffers.py)
and the app reads a seekable buffer. With ``--no-request-buffering`` the app gets this stream
instead: the body and not one byte more, part of it already in the connection's buffer (read
together with the head), the rest read from the socket as the app asks for it. Whatever we
read past the body belongs to the next pipelined request and goes back into the buffer.
Chunked bodies are decoded here with the sans-IO decoder, so the app sees plain data either way
and ``wsgi.input_terminated`` can be promised.

``Expect: 100-continue`` is answered lazily: the interim ``100 Continue`` goes out only when the
app first reads, so an app that rejects a large upload by its headers never invites it.

Reading happens inside the app, synchronously: a client that stalls its body holds the worker
for up to ``--body-timeout`` per wait (nginx's ``client_body_timeout`` has the same meaning),
then the read raises ``ClientTimeout``. A failed read (timeout, disconnect, bad chunking) is
remembered and raised again by every later read, so an app that catches the first one cannot
make us wait a second time, and the connection is never reused.

``CONTINUE`` and ``EMPTY_BODY`` (the input of a request without a body) serve both modes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from .connection import ClientDisconnected, ClientTimeout, Connection
from .http import ChunkedDecoder, Limits, ParseError, Request

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Unread body the server will read and discard to keep a connection alive; beyond this it is
#: cheaper for everyone to close the connection.
DRAIN_LIMIT: Final = 1 << 20


class RequestBody:
    """A file-like object over the request body (PEP 3333's input stream, plus ``readlines``
    hint and iteration)."""

    __slots__ = ("_conn", "_remaining", "_decoder", "_pending", "_continue", "_eof", "_error",
                 "received")

    def __init__(self, conn: Connection, req: Request, limits: Limits) -> None:
        self._conn = conn
        self._pending = bytearray()
        self._continue = req.expect_continue
        self._error: ClientDisconnected | ClientTimeout | ParseError | None = None
        self.received = 0
        if req.chunked:
            self._decoder: ChunkedDecoder | None = ChunkedDecoder(limits)
            self._remaining = -1
            self._eof = False
        else:
            self._decoder = None
            self._remaining = req.content_length or 0
            self._eof = self._remaining == 0

    def _next(self) -> bytes:
        """The next piece of body data, ``b""`` at the end of the body."""
        if self._eof:
            return b""
        if self._error is not None:
            raise self._error
        try:
            data = self._receive()
        except (ClientDisconnected, ClientTimeout, ParseError) as exc:
            self._error = exc
            raise
        return data

    def _receive(self) -> bytes:
        """One step: what the buffer holds of the body, else one (bounded) wait on the socket."""
        conn = self._conn
        if self._continue:
            self._continue = False
            conn.send(CONTINUE)
        decoder = self._decoder
        if decoder is None:
            if not conn.buf:
                conn.buf += self._recv()
            buf = conn.buf
            take = min(self._remaining, len(buf))
            data = bytes(buf[:take])
            del buf[:take]
            self._remaining -= take
            self._eof = self._remaining == 0
        else:
            data = decoder.decode(conn.buf)
            while not data and not decoder.done:
                conn.buf += self._recv()
                data = decoder.decode(conn.buf)
            self._eof = decoder.done
        return data

    def _recv(self) -> bytes:
        """Bytes from the socket (bounded wait), counted: the loop never saw them, so
        Protocol.serve adds ``received`` to the slot's traffic when the app is done."""
        data = self._conn.recv_wait()
        self.received += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        pending = self._pending
        whole = size is None or size < 0
        if not pending and not self._eof:
            # The common case: the body came with the head, in one piece. Hand it over as it
            # is rather than copy it into ``pending`` and out again.
            data = self._next()
            if self._eof and (whole or len(data) <= size):  # type: ignore[operator]
                return data
            pending += data
        if whole:
            while not self._eof:
                pending += self._next()
            data = bytes(pending)
            pending.clear()
            return data
        while len(pending) < size and not self._eof:
            pending += self._next()
        data = bytes(pending[:size])
        del pending[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        pending = self._pending
        limit = size if size is not None and size >= 0 else -1
        start = 0
        while True:
            newline = pending.find(b"\n", start)
            if newline >= 0:
                end = newline + 1
                break
            if 0 <= limit <= len(pending) or self._eof:
                end = len(pending)
                break
            start = len(pending)
            pending += self._next()
        if 0 <= limit < end:
            end = limit
        line = bytes(pending[:end])
        del pending[:end]
        return line

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def reusable(self) -> bool:
        """False when drain() is sure to refuse: the response head can then say
        ``Connection: close`` instead of the client meeting a closed socket."""
        return self._eof or (self._error is None and not self._continue
                             and (self._decoder is not None or self._remaining <= DRAIN_LIMIT))

    def drain(self) -> bool:
        """Discard what the app left unread so the connection can carry the next request.
        Returns False (close the connection instead) when the client was never told to send
        its body, when more than DRAIN_LIMIT would have to be read, or when the client fails
        meanwhile (gone, stalled past the body timeout, bad chunking)."""
        self._pending.clear()
        if self._eof:
            return True
        if not self.reusable():
            return False
        budget = DRAIN_LIMIT
        try:
            while not self._eof:
                budget -= len(self._next())
                if budget < 0:
                    return False
        except (ClientDisconnected, ClientTimeout, ParseError):
            return False
        return True


class EmptyBody:
    """``wsgi.input`` for requests without a body: stateless, so one instance serves all."""

    __slots__ = ()
    received = 0

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def reusable(self) -> bool:
        return True

    def drain(self) -> bool:
        return True


EMPTY_BODY: Final = EmptyBody()
