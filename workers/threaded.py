"""``--threads N``: the event loop keeps all client I/O, a thread pool runs the application.

For I/O-bound apps (waiting on a database or an API) one request at a time per process wastes
the process. Here the loop thread still accepts, reads heads and bodies, sends parked
responses and handles idle keep-alive connections; only APP — a complete request — goes to a
pool thread, which runs the app and hands the connection back. While a thread owns a
connection, the connection is out of epoll and out of ``conns``, so the loop never touches it.

Coming back costs the loop at most one wakeup however many threads finish meanwhile: finished
connections go on a deque, and a byte goes down the wakeup pipe only if the loop has not been
told already. Everything that changes the loop's structures — re-registering, closing,
retiring — happens on the loop thread. The buffer budget and the scoreboard counters are
shared with the pool threads, so they take a lock.

With threads, ``--timeout`` watches the event loop: a hung application thread shows as a
request that never ends (``prefork status``), not as a missed heartbeat, as in gunicorn's
gthread worker.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .buffers import Budget
from .connection import Connection
from .scoreboard import Slot
from .worker import Worker
from .wsgi import WSGIRequestHandler

log = logging.getLogger("prefork.error")


class LockedSlot:
    """The scoreboard slot, shared by the pool threads: counter updates are read-modify-write,
    so they take a lock (cheap next to the I/O these apps wait on)."""

    def __init__(self, slot: Slot) -> None:
        self._slot = slot
        self._lock = threading.Lock()
        self._in_flight = 0

    def request_started(self, now: float) -> None:
        with self._lock:
            self._slot.request_started(now)
            self._in_flight += 1
            self._slot.set_in_flight(self._in_flight)

    def request_finished(self, method: str, status: int, duration: float) -> None:
        with self._lock:
            self._slot.request_finished(method, status, duration)
            self._in_flight -= 1
            self._slot.set_in_flight(self._in_flight)

    def publish_counts(self) -> None:
        with self._lock:
            self._slot.publish_counts()

    def add_traffic(self, received: int, sent: int) -> None:
        """The loop's once-a-second sums, and what a pool thread's app read from the socket."""
        with self._lock:
            self._slot.add_traffic(received, sent)

    def __getattr__(self, name: str) -> Any:  # set_pid, ready, heartbeat, set_state, requests, gauges
        return getattr(self._slot, name)


class LockedBudget(Budget):
    """The buffer budget, shared by the loop and the pool threads (which park responses)."""

    __slots__ = ("_lock",)

    def __init__(self, limit: int, tmp_dir: str | None) -> None:
        super().__init__(limit, tmp_dir)
        self._lock = threading.Lock()

    def take(self, size: int) -> None:
        with self._lock:
            self.used += size

    def give(self, size: int) -> None:
        with self._lock:
            self.used -= size


class ThreadedWorker(Worker):
    """A Worker whose requests run on a pool of ``--threads`` threads."""

    CLOSES_AFTER_RESPONSE = False  # the loop closes it when it takes the connection back
    APP_ON_LOOP_THREAD = False  # the loop thread sees INT/QUIT itself: no need to interrupt

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slot = LockedSlot(self.slot)  # type: ignore[assignment]
        self.pool = ThreadPoolExecutor(self.cfg.threads, thread_name_prefix="prefork-app")
        self.busy: dict[int, Connection] = {}
        self.finished: collections.deque[tuple[Connection, bool]] = collections.deque()
        self.wake_pending = False
        self.handlers = [self.handler]
        self._local = threading.local()
        self._handlers_lock = threading.Lock()
        self.protocol.run_app = self.run_app

    def make_budget(self) -> Budget:
        return LockedBudget(self.cfg.worker_buffer_memory, self.cfg.worker_tmp_dir)

    def run_app(self, conn: Connection) -> float:
        """Hand the connection to a pool thread (0.0: not finished here); the loop resumes it
        in _on_wakeup."""
        del self.conns[conn.fd]
        if conn.registered:
            self.epoll.unregister(conn.fd)
            conn.registered = False
        self.busy[conn.fd] = conn
        self.pool.submit(self._run, conn)
        return 0.0

    def _run(self, conn: Connection) -> None:
        served = False
        try:
            self.protocol.serve(self._thread_handler(), conn)
            served = True
        except Exception:
            log.exception("Error serving a connection")
        finally:
            self.finished.append((conn, served))
            if not self.wake_pending:
                self.wake_pending = True
                os.write(self._wakeup_w, b"\0")

    def _thread_handler(self) -> WSGIRequestHandler:
        handler = getattr(self._local, "handler", None)
        if handler is None:
            with self._handlers_lock:
                handler = self._local.handler = self.make_handler()
                self.handlers.append(handler)
        return handler

    def _on_wakeup(self) -> None:
        super()._on_wakeup()
        self.wake_pending = False  # before draining: a thread finishing now wakes us again
        now = time.monotonic()
        while self.finished:
            conn, served = self.finished.popleft()
            del self.busy[conn.fd]
            self.conns[conn.fd] = conn
            if not served or self.stop_now:
                self.close(conn)
                continue
            self.protocol.advance(conn, now)
            self.settle(conn)

    def retire(self, why: str) -> None:
        with self._handlers_lock:
            for handler in self.handlers:
                handler.keep_alive_allowed = False
            super().retire(why)

    def _open_connections(self) -> int:
        return super()._open_connections() + len(self.busy)

    def _drained(self) -> bool:
        return super()._drained() and not self.busy
