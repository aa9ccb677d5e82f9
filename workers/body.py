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

Once the app is done, the worker never waits for its client again: a body the app left unread
keeps the connection alive only if all of it is here already (in the buffer, or readable from
the socket without waiting); the response head decides it (``reusable``) and says
``Connection: close`` otherwise, and the close then lingers (workers/linger.py) so the client
still sending its body reads the response rather than a reset.

``CONTINUE`` and ``EMPTY_BODY`` (the input of a request without a body) serve both modes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from .connection import ClientDisconnected, ClientTimeout, Connection
from .http import ChunkedDecoder, Limits, ParseError, Request

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Unread body the server will hold to find out whether the rest of it is here (and the
#: connection can carry another request); beyond this it closes the connection.
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
        """One step: what the buffer holds of the body, else (bounded) waits on the socket."""
        conn = self._conn
        if self._continue:
            self._continue = False
            conn.send(CONTINUE)
        data = self._take()
        while not data and not self._eof:
            conn.buf += self._recv()
            data = self._take()
        return data

    def _take(self) -> bytes:
        """The body bytes the connection's buffer holds (decoded), without any I/O: maybe
        ``b""``. Raises ParseError for bad chunking."""
        buf = self._conn.buf
        decoder = self._decoder
        if decoder is None:
            take = min(self._remaining, len(buf))
            data = bytes(buf[:take])
            del buf[:take]
            self._remaining -= take
            self._eof = self._remaining == 0
        else:
            data = decoder.decode(buf)
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
        """True when the rest of the body is already here, so the connection can carry the
        next request once the app is done; the response head says ``Connection: close``
        otherwise. What the app left unread is taken in — from the connection's buffer and
        what the socket holds now, never waiting, at most DRAIN_LIMIT — and kept for the app,
        which may still read it."""
        return self._eof or self._gather()

    def _gather(self) -> bool:
        """reusable()'s work: move what has arrived of the body into ``_pending``. False when
        the client was never invited to send it (Expect: 100-continue), has failed, sends a
        bad chunk, or has not sent it all yet."""
        if self._continue or self._error is not None:
            return False
        conn = self._conn
        pending = self._pending
        budget = DRAIN_LIMIT  # bytes read from the socket here
        try:
            while True:
                data = self._take()
                pending += data
                if self._eof:
                    return True
                if data:
                    continue
                more = conn.recv_available()
                if not more:  # nothing yet (None), or the client's end (b"")
                    return False
                self.received += len(more)
                conn.buf += more  # (the app may still read it, whatever we answer)
                budget -= len(more)
                if budget < 0:
                    return False
        except ParseError as exc:
            self._error = exc
            return False

    def drain(self) -> bool:
        """The app is done: drop what it left unread. True when that was the whole body — what
        reusable() told the response head — so the connection can carry the next request.
        Never waits for the client: once the app is done, the worker is no longer its."""
        self._pending.clear()
        return self._eof


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
