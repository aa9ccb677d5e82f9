"""Where the bytes wait that a slow client has not sent or not taken yet.

A worker never waits for a client while the application runs: the request body is collected
by the event loop before the app is called, and the part of a response the client cannot take
yet is parked and sent by the loop later. Both kinds of waiting bytes live in memory while they
are small, and in a *spool file* beyond that: an unlinked temporary file (``O_TMPFILE``) that
vanishes when it is closed or when the worker dies, so neither a crash nor a kill -9 leaves
anything behind. One ``Budget`` per worker bounds the memory all its connections hold together,
so a crowd of slow clients turns into disk pages, not worker memory.

A spool file that cannot be made (out of file descriptors) or written (disk full) is the
server's trouble, never a reason to crash the worker or to hold more memory: a request body is
refused with a 503 (workers/protocol.py), a response goes on synchronously (its app waits for
the client, workers/connection.py). ``SpoolWarnings`` says so in the error log without letting
a full disk flood it.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import tempfile
import threading
import time
from typing import BinaryIO, Final

from .http import ChunkedDecoder, Limits, Request

log = logging.getLogger("prefork.error")

#: Seconds between two warnings about failing spool files: with the disk full every large
#: upload fails, and one line per upload would bury everything else in the log.
SPOOL_WARNING_INTERVAL: Final = 10.0


class SpoolWarnings:
    """Warns that a spool file could not be made or written: the first failure at once, then
    at most one line per SPOOL_WARNING_INTERVAL, which counts the failures it stood for. Pool
    threads park responses too (--threads), hence the lock (taken only on a failure)."""

    __slots__ = ("directory", "_lock", "_quiet_until", "_unreported")

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._quiet_until = 0.0
        self._unreported = 0

    def report(self, exc: OSError, consequence: str) -> None:
        """One failure (``exc``), and what the server did instead (``consequence``)."""
        now = time.monotonic()
        with self._lock:
            self._unreported += 1
            if now < self._quiet_until:
                return
            count, self._unreported = self._unreported, 0
            self._quiet_until = now + SPOOL_WARNING_INTERVAL
        more = f" ({count - 1} more like it since the last warning)" if count > 1 else ""
        log.warning("cannot spool to %s: %s; %s%s", self.directory, exc.strerror or exc,
                    consequence, more)


class Budget:
    """The memory one worker's buffers may hold together, where spool files go, and who
    reports them failing."""

    __slots__ = ("limit", "used", "tmp_dir", "spool_warnings")

    def __init__(self, limit: int, tmp_dir: str | None) -> None:
        self.limit = limit
        self.used = 0
        self.tmp_dir = tmp_dir or tempfile.gettempdir()
        self.spool_warnings = SpoolWarnings(self.tmp_dir)

    def fits(self, size: int) -> bool:
        return self.used + size <= self.limit

    def take(self, size: int) -> None:
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


def open_spool(directory: str) -> int:
    """A new spool file's fd: unlinked from the start, private to this process."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    # A file system without O_TMPFILE: create, then unlink at once.
    fd, path = tempfile.mkstemp(dir=directory, prefix="prefork-spool-")
    os.unlink(path)
    return fd


def spool_write(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` at the spool file's end. Unbuffered, so a failure (disk full,
    file too large) is raised here, as OSError, and nothing is left to fail again later."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class RequestBuffer:
    """A request body collected by the loop; the app reads it as a seekable ``wsgi.input``.

    ``feed`` moves body bytes from the front of the connection's buffer (chunked framing is
    decoded here, and bytes past the body stay there for the next pipelined request). Up to
    ``cap`` bytes stay in memory while the worker's budget allows; the rest of the body, and
    what was in memory, goes to a spool file. The body-size limit is the parser's: a
    Content-Length over it never gets here, a chunked body over it raises at the chunk size
    line, before any byte of the excess is stored. A spool file that cannot be made or written
    raises OSError from ``feed``.
    """

    __slots__ = ("budget", "cap", "memory", "spool", "size", "remaining", "decoder", "held")

    def __init__(self, req: Request, limits: Limits, budget: Budget, cap: int) -> None:
        self.budget = budget
        self.cap = cap
        self.memory = bytearray()
        self.spool: io.FileIO | None = None  # unbuffered: see spool_write
        self.size = 0
        self.held = 0  # bytes counted in the budget
        if req.chunked:
            self.decoder: ChunkedDecoder | None = ChunkedDecoder(limits)
            self.remaining = -1
        else:
            self.decoder = None
            self.remaining = req.content_length or 0

    def feed(self, buf: bytearray) -> bool:
        """Take the body's bytes from ``buf``; True once the whole body is here. Raises
        ParseError for bad chunking or a chunked body over the limit, OSError when the spool
        file cannot be made or written."""
        decoder = self.decoder
        if decoder is None:
            take = min(self.remaining, len(buf))
            if take:
                self._store(buf[:take])
                del buf[:take]
                self.remaining -= take
            return self.remaining == 0
        data = decoder.decode(buf)
        if data:
            self._store(data)
        return decoder.done

    def _store(self, data: bytes | bytearray) -> None:
        size = len(data)
        self.size += size
        if self.spool is None:
            budget = self.budget
            if len(self.memory) + size <= self.cap and budget.fits(size):
                self.memory += data
                budget.take(size)
                self.held += size
                return
            self.spool = io.FileIO(open_spool(budget.tmp_dir), "r+")
            spool_write(self.spool.fileno(), self.memory)
            self._release()
        spool_write(self.spool.fileno(), data)

    def stream(self) -> BinaryIO:
        """``wsgi.input``: the whole body, seekable, positioned at its start."""
        spool = self.spool
        if spool is None:
            return io.BytesIO(self.memory)
        spool.seek(0)
        return io.BufferedReader(spool)  # (reads stop with an error once close() closed it)

    def buffered(self) -> int:
        """Bytes held so far, memory and spool (for ``prefork status``)."""
        return self.size

    def _release(self) -> None:
        if self.held:
            self.budget.give(self.held)
            self.held = 0
        self.memory = bytearray()

    def close(self) -> None:
        """The app is done with the body: give back the memory, drop the spool file."""
        self._release()
        if self.spool is not None:
            self.spool.close()
            self.spool = None


class WholeBody:
    """A body that came whole with its head (a small POST, usually): no more than one read
    already made, so nothing to wait for, spool or count in the budget. It answers what the
    worker asks a RequestBuffer in APP (``stream``, ``buffered``, ``close``), at the cost of
    one small object: most POSTs take this path, and each attribute set is per request."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self) -> BinaryIO:
        """``wsgi.input``: shares the bytes (BytesIO copies only if written to)."""
        return io.BytesIO(self.data)

    def buffered(self) -> int:
        return len(self.data)

    def close(self) -> None:
        """Nothing held: the bytes go with the object."""
