"""The worker: one process, one epoll loop, requests run synchronously.

    epoll: listeners (EPOLLEXCLUSIVE) + client connections + the signal wakeup pipe
      listener ready  -> accept one connection, read what has arrived (TCP_DEFER_ACCEPT: usually
                         the whole head), serve it
      connection ready -> recv into its buffer; every complete head -> parse -> WSGI app ->
                         response; pipelined heads are answered in order; else back to epoll
      every turn      -> heartbeat; once a second: close idle / too-slow connections, check the
                         arbiter is alive

Reading heads inside the loop means a slow or idle client costs a buffer, not the worker.
Connections stay registered in epoll for their whole life (level-triggered), so keep-alive
costs no registration syscalls per request.

Stopping: the arbiter sends TERM to *retire* a worker (graceful: stop accepting, finish
in-flight and pipelined requests, answer every further request with ``Connection: close``,
let idle connections run out their keep-alive time — an active client always learns of the
close from a response, never from a reset — and exit when none are left or at the graceful
timeout). INT and QUIT stop at once. The arbiter's death (we get re-parented) retires us too.
"""

from __future__ import annotations

import errno
import faulthandler
import logging
import os
import random
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from prefork.config.appload import AppLoadError, load_app
from prefork.config.logsetup import reopen_log_files
from prefork.config.settings import Config, is_default_hook

from .connection import Connection, IOPolicy
from .http import NEED_DATA, Limits, ParseError, parse_head
from .proxy import ForwardedTrust
from .response import error_response
from .exitcodes import APP_LOAD_ERROR, WORKER_BOOT_ERROR, WORKER_OK
from .privileges import drop_privileges
from .reloader import SourceWatcher
from .scoreboard import HEARTBEAT, Slot, State
from .wsgi import WSGIRequestHandler, base_environ

log = logging.getLogger("prefork.error")

TICK: Final = 1.0
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
MAX_EVENTS: Final = 256
#: A retiring worker accepts at most this many already-queued connections before it closes.
RETIRE_ACCEPT_MAX: Final = 1024
_LISTENER_EVENTS: Final = select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0)
_ACCEPT_ERRORS_TO_IGNORE: Final = frozenset({errno.EAGAIN, errno.ECONNABORTED, errno.EPROTO, errno.EINTR})


class Listener:
    """A listening socket plus the environ keys every request accepted on it shares."""

    __slots__ = ("sock", "fd", "environ", "unix")

    def __init__(self, sock: socket.socket, *, multithread: bool, root_path: str) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.unix = sock.family == socket.AF_UNIX
        if self.unix:
            name, port = "localhost", ""
        else:
            addr = sock.getsockname()
            name, port = addr[0], str(addr[1])
        self.environ = base_environ(name, port, "http", multithread=multithread, root_path=root_path)


class Worker:
    """Serves requests from the shared listeners until told to stop. See the module docstring."""

    def __init__(self, cfg: Config, app: Callable[..., Iterable[bytes]], sockets: list[socket.socket],
                 slot: Slot, ppid: int, number: int = 1) -> None:
        self.cfg = cfg
        self.app = app
        self.slot = slot
        self.ppid = ppid
        self.number = number
        self.pid = os.getpid()
        self.limits = Limits(request_line=cfg.limit_request_line, fields=cfg.limit_request_fields,
                             field_size=cfg.limit_request_field_size, body=cfg.limit_request_body)
        self.listeners = {s.fileno(): Listener(s, multithread=cfg.threads > 1, root_path=cfg.root_path)
                          for s in sockets}
        self.proxy = ForwardedTrust(cfg.forwarded_allow_ips)
        self.handler = WSGIRequestHandler(app, limits=self.limits, root_path=cfg.root_path,
                                          server_header=cfg.server_header, proxy=self.proxy)
        self.handler.keep_alive_allowed = cfg.keepalive > 0
        self.policy = IOPolicy(cfg.body_timeout, slot.heartbeat)
        self.conns: dict[int, Connection] = {}
        self.max_requests = cfg.max_requests
        if self.max_requests and cfg.max_requests_jitter:
            self.max_requests += random.randint(0, cfg.max_requests_jitter)
        # Per-request hooks cost a call per request, so they run only when the user set them.
        self.pre_request = None if is_default_hook(cfg.pre_request) else cfg.pre_request
        self.post_request = None if is_default_hook(cfg.post_request) else cfg.post_request
        self.rss_limit = cfg.max_worker_memory * 1024 * 1024
        self._statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC) if self.rss_limit else -1
        # --reload: only worker 1 watches, so one edit means one HUP.
        self.watcher = SourceWatcher() if cfg.reload and number == 1 else None
        self.retiring = False
        self.retire_requested = False
        self.reopen_requested = False
        self.stop_now = False
        self.retire_deadline = 0.0
        self.epoll = select.epoll()
        self._wakeup_r = -1

    # -- setup ---------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        """Handlers only set flags; the wakeup pipe makes epoll return so the loop sees them."""
        self._wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
        self.epoll.register(self._wakeup_r, select.EPOLLIN)
        signal.signal(signal.SIGTERM, self._on_retire)
        signal.signal(signal.SIGINT, self._on_stop_now)
        signal.signal(signal.SIGQUIT, self._on_stop_now)
        signal.signal(signal.SIGUSR1, self._on_reopen)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the arbiter reloads; a worker just retires
        # SIGABRT from the arbiter (heartbeat timeout): dump every thread's stack where we hang.
        faulthandler.enable(file=_error_log_stream(), all_threads=True)

    def _on_retire(self, signum: int, frame: Any) -> None:
        self.retire_requested = True

    def _on_stop_now(self, signum: int, frame: Any) -> None:
        self.stop_now = True

    def _on_reopen(self, signum: int, frame: Any) -> None:
        self.reopen_requested = True

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; the return value is the process exit code."""
        self._install_signals()
        for fd, listener in self.listeners.items():
            listener.sock.setblocking(False)
            self.epoll.register(fd, _LISTENER_EVENTS)
        now = time.monotonic()
        self.slot.set_pid(os.getpid())
        self.slot.ready(now)
        listeners = self.listeners
        conns = self.conns
        heartbeat_index = self.slot.base + HEARTBEAT  # a direct store: the cheapest heartbeat
        floats = self.slot.floats
        next_tick = now + TICK
        poll = self.epoll.poll
        while not self.stop_now:
            events = poll(TICK, MAX_EVENTS)
            now = time.monotonic()
            floats[heartbeat_index] = now
            for fd, _ in events:
                conn = conns.get(fd)
                if conn is not None:
                    self._on_readable(conn)
                elif fd in listeners:
                    self._accept(listeners[fd], now)
                elif fd == self._wakeup_r:
                    self._on_wakeup()
            if now >= next_tick:
                next_tick = now + TICK
                self._tick(now)
            if self.retiring and (not conns or now >= self.retire_deadline):
                break
        self._close_all()
        return WORKER_OK

    def _on_wakeup(self) -> None:
        try:
            while os.read(self._wakeup_r, 64):
                pass
        except BlockingIOError:
            pass
        if self.retire_requested and not self.retiring:
            self.retire("asked to stop")
        if self.reopen_requested:
            self.reopen_requested = False
            reopen_log_files()

    def _tick(self, now: float) -> None:
        """Once a second: drop connections past their deadline; notice an orphaned worker."""
        expired = [conn for conn in self.conns.values() if conn.deadline <= now]
        for conn in expired:
            if conn.buf:  # a head that never completed (slowloris): say why, best effort
                try:
                    conn.sock.send(error_response(408, "request head not received in time",
                                                  self.cfg.server_header))
                except OSError:
                    pass
            self._close(conn)
        if not self.retiring and os.getppid() != self.ppid:
            self.retire("the arbiter is gone")
        if self.watcher is not None and not self.retiring:
            changed = self.watcher.changed()
            if changed:
                log.info("Source changed: %s; asking the arbiter to reload", changed)
                self.watcher = None  # the next generation watches again
                os.kill(self.ppid, signal.SIGHUP)

    def retire(self, why: str) -> None:
        """Stop accepting now; finish what is in flight (see the module docstring)."""
        log.info("Worker %d retiring: %s", os.getpid(), why)
        self.retiring = True
        self.handler.keep_alive_allowed = False
        self.retire_deadline = time.monotonic() + self.cfg.graceful_timeout
        self.slot.set_state(State.RETIRING)
        listeners = list(self.listeners.values())
        self.listeners = {}
        for listener in listeners:
            self.epoll.unregister(listener.fd)
        # EPOLLEXCLUSIVE may have woken only us for a connection that is still queued: take
        # every queued one now (after leaving epoll, so no new wakeup can pick us) and serve
        # it, rather than leave it waiting for a wakeup that went to a retiring worker.
        now = time.monotonic()
        for listener in listeners:
            for _ in range(RETIRE_ACCEPT_MAX):
                if not self._accept(listener, now):
                    break
            listener.sock.close()
        for conn in self.conns.values():
            conn.deadline = min(conn.deadline, self.retire_deadline)

    # -- connections ---------------------------------------------------------------------------

    def _accept(self, listener: Listener, now: float) -> bool:
        """Accept one connection and serve what it already sent; False if none was queued."""
        try:
            sock, addr = listener.sock.accept()
        except OSError as exc:
            if exc.errno not in _ACCEPT_ERRORS_TO_IGNORE:
                log.warning("accept() failed: %s", exc)
            return False
        sock.setblocking(False)
        environ = listener.environ.copy()
        if listener.unix:
            remote, port = "", ""
        else:
            remote, port = addr[0], str(addr[1])
        environ["REMOTE_ADDR"] = remote
        environ["REMOTE_PORT"] = port
        conn = Connection(sock, environ, self.proxy.trusts(remote), self.policy,
                          now + self.cfg.head_timeout)
        self.conns[conn.fd] = conn
        self.epoll.register(conn.fd, select.EPOLLIN)
        self._on_readable(conn)
        return True

    def _on_readable(self, conn: Connection) -> None:
        data = conn.recv_available()
        if data is None:
            return
        if not data:
            self._close(conn)
            return
        buf = conn.buf
        if not buf:  # a new head starts now: it gets head_timeout to arrive completely
            conn.deadline = time.monotonic() + self.cfg.head_timeout
        buf += data
        if not self._serve(conn):
            self._close(conn)

    def _serve(self, conn: Connection) -> bool:
        """Answer every complete request in the buffer, in order. False: close the connection."""
        handler = self.handler
        slot = self.slot
        limits = self.limits
        while True:
            try:
                parsed = parse_head(conn.buf, limits)
            except ParseError as exc:
                log.debug("bad request from %s: %d %s", conn.environ["REMOTE_ADDR"], exc.status, exc.reason)
                try:
                    conn.send(error_response(exc.status, exc.reason, self.cfg.server_header))
                except OSError:
                    pass
                return False
            if parsed is NEED_DATA:
                return True
            req, consumed = parsed  # type: ignore[misc]
            del conn.buf[:consumed]
            start = time.monotonic()
            slot.request_started(start)
            if self.pre_request is not None:
                self._run_hook(self.pre_request, self, req)
            keep = handler.handle(conn, req)
            if self.post_request is not None:
                self._run_hook(self.post_request, self, req, handler.environ, handler)
            now = time.monotonic()
            slot.request_finished(handler.status_code, now - start,
                                  State.RETIRING if self.retiring else State.READY)
            if self.max_requests and slot.requests() >= self.max_requests and not self.retiring:
                self.retire(f"served {self.max_requests} requests (--max-requests)")
            if self.rss_limit and not self.retiring and self._rss() > self.rss_limit:
                self.retire(f"memory above {self.cfg.max_worker_memory} MiB (--max-worker-memory)")
            if not keep:
                return False
            conn.deadline = now + self.cfg.keepalive
            if self.retiring:
                conn.deadline = min(conn.deadline, self.retire_deadline)
            if not conn.buf:
                return True

    def _rss(self) -> int:
        """Resident memory in bytes: one pread of /proc/self/statm, kept open (cheaper than a
        psutil call per request, and the same number)."""
        return int(os.pread(self._statm, 128, 0).split()[1]) * _PAGE_SIZE

    def _run_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("Exception in %s hook", getattr(hook, "__name__", "request"))

    def _close(self, conn: Connection) -> None:
        del self.conns[conn.fd]
        conn.close()

    def _close_all(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn)



def _error_log_stream() -> Any:
    """Where faulthandler writes: the error log's file if it is one, else stderr."""
    for handler in logging.getLogger("prefork.error").handlers:
        stream = getattr(handler, "stream", None)
        if stream is not None and hasattr(stream, "fileno"):
            try:
                stream.fileno()
            except (OSError, ValueError):
                continue
            return stream
    return sys.stderr


def run_worker(cfg: Config, app: Callable[..., Iterable[bytes]] | None, sockets: list[socket.socket],
               slot: Slot, ppid: int, number: int = 1) -> int:
    """The worker process's life after fork: drop privileges, load the app (unless the
    arbiter preloaded it), then serve. Returns the exit code; a failing import is
    APP_LOAD_ERROR, which tells the arbiter not to respawn blindly."""
    try:
        drop_privileges(cfg.user, cfg.group, cfg.umask)
    except (OSError, KeyError) as exc:
        log.error("Cannot switch to user %s / group %s: %s", cfg.user, cfg.group, exc)
        return WORKER_BOOT_ERROR
    if app is None:
        try:
            app = load_app(cfg.app)  # type: ignore[arg-type]
        except AppLoadError as exc:
            log.error("Failed to load the application: %s", exc)
            log.debug("Import traceback", exc_info=exc.__cause__ or exc)
            return APP_LOAD_ERROR
    worker = Worker(cfg, app, sockets, slot, ppid, number)
    cfg.post_worker_init(worker)
    return worker.run()
