"""``--threads N``: the event loop keeps all I/O, a thread pool runs the application.

For I/O-bound apps (waiting on a database or an API) one request at a time per process wastes
the process. Here the loop thread still accepts, reads heads, handles idle keep-alive and
slow clients; only a connection with a complete request goes to a pool thread, which runs it
(and any pipelined requests behind it) with its own WSGIRequestHandler. While a thread owns a
connection, the connection is out of epoll and out of ``conns``, so the loop never touches it.

Coming back costs the loop at most one wakeup however many threads finish meanwhile: finished
connections go on a deque, and a byte goes down the wakeup pipe only if the loop has not been
told already. Everything that changes the loop's structures — re-registering, closing,
retiring — happens on the loop thread.

With threads, ``--timeout`` watches the event loop: a hung application thread shows as a
request that never ends (``prefork status``), not as a missed heartbeat, as in gunicorn's
gthread worker.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .connection import Connection
from .http import NEED_DATA, ParseError, parse_head
from .scoreboard import Slot, State
from .worker import Worker
from .wsgi import WSGIRequestHandler

log = logging.getLogger("prefork.error")


class LockedSlot:
    """The scoreboard slot, shared by the pool threads: counter updates are read-modify-write,
    so they take a lock (cheap next to the I/O these apps wait on)."""

    def __init__(self, slot: Slot) -> None:
        self._slot = slot
        self._lock = threading.Lock()
        self.base = slot.base
        self.floats = slot.floats
        self.ints = slot.ints

    def request_started(self, now: float) -> None:
        with self._lock:
            self._slot.request_started(now)

    def request_finished(self, status: int, duration: float, state: State) -> None:
        with self._lock:
            self._slot.request_finished(status, duration, state)

    def __getattr__(self, name: str) -> Any:  # set_pid, ready, heartbeat, set_state, requests
        return getattr(self._slot, name)


class ThreadedWorker(Worker):
    """A Worker whose requests run on a pool of ``--threads`` threads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slot = LockedSlot(self.slot)  # type: ignore[assignment]
        self.pool = ThreadPoolExecutor(self.cfg.threads, thread_name_prefix="prefork-app")
        self.busy: dict[int, Connection] = {}
        self.finished: collections.deque[tuple[Connection, bool]] = collections.deque()
        self.wake_pending = False
        self.loop_thread = threading.get_ident()
        self.handlers = [self.handler]
        self._local = threading.local()
        self._handlers_lock = threading.Lock()

    def _serve(self, conn: Connection, handler: WSGIRequestHandler | None = None) -> bool:
        if handler is not None:  # in a pool thread: the one-thread worker's loop, our handler
            return super()._serve(conn, handler)
        try:
            if parse_head(conn.buf, self.limits) is NEED_DATA:
                return True
        except ParseError:
            return super()._serve(conn)  # answering a bad request needs no thread
        del self.conns[conn.fd]
        try:
            self.epoll.unregister(conn.fd)
        except FileNotFoundError:  # accepted this turn and not registered yet (Worker._accept)
            pass
        self.busy[conn.fd] = conn
        self.pool.submit(self._run, conn)
        return True

    def _run(self, conn: Connection) -> None:
        keep = False
        try:
            keep = super()._serve(conn, self._thread_handler())
        except Exception:
            log.exception("Error serving a connection")
        finally:
            self.finished.append((conn, keep))
            if not self.wake_pending:
                self.wake_pending = True
                os.write(self._wakeup_w, b"\0")

    def _thread_handler(self) -> WSGIRequestHandler:
        handler = getattr(self._local, "handler", None)
        if handler is None:
            handler = self._local.handler = self._make_handler()
            with self._handlers_lock:
                handler.keep_alive_allowed = handler.keep_alive_allowed and not self.retiring
                self.handlers.append(handler)
        return handler

    def _on_wakeup(self) -> None:
        super()._on_wakeup()
        self.wake_pending = False  # before draining: a thread finishing now wakes us again
        while self.finished:
            conn, keep = self.finished.popleft()
            del self.busy[conn.fd]
            if keep and not self.stop_now:
                self.conns[conn.fd] = conn
                self.epoll.register(conn.fd, select.EPOLLIN)
                if self.retiring:
                    conn.deadline = min(conn.deadline, self.retire_deadline)
            else:
                conn.close()

    def retire(self, why: str) -> None:
        if threading.get_ident() != self.loop_thread:  # from a pool thread (--max-requests)
            self.retire_why = why
            self.retire_requested = True
            os.write(self._wakeup_w, b"\0")
            return
        with self._handlers_lock:
            for handler in self.handlers:
                handler.keep_alive_allowed = False
            super().retire(why)

    def _open_connections(self) -> int:
        return super()._open_connections() + len(self.busy)

    def _drained(self) -> bool:
        return super()._drained() and not self.busy
