"""The worker: one process, one epoll loop; the loop does every byte of client I/O.

    epoll: listeners (EPOLLEXCLUSIVE) + client connections + the signal wakeup pipe
      listener ready   -> accept a few connections (within our share and our cap), and run
                          what each already sent (TCP_DEFER_ACCEPT: usually the whole request)
      connection ready -> its state machine takes the next step (workers/protocol.py):
                          HEAD, BODY and WRITE are the loop's, APP runs the app on a complete
                          request and hands its response back
      preamble ready   -> (HTTPS, --proxy-protocol) the next step of the PROXY header / TLS
                          handshake; the connection joins the others once HTTP can start
      lingering ready  -> (a connection closed after an early answer, workers/linger.py)
                          discard what its client still sends
      every turn       -> heartbeat; once a second: expire connections past their deadline,
                          publish the connection gauges, write the access log, check the
                          arbiter is alive

So no client, however slow at sending or reading, holds the worker: it costs a buffer (memory,
then a spool file), and the app runs only on complete requests. Connections are
level-triggered and stay registered for their whole life, so keep-alive costs no
registration syscalls per request.

Stopping: the arbiter sends TERM to *retire* a worker (graceful: stop accepting — the
connections already queued are taken first — finish in-flight and pipelined requests, answer
every further request with ``Connection: close``, send parked responses, let idle
connections run out their keep-alive time and lingering closes end, and exit when none are
left or, just before the graceful timeout, end what is left: a head or body still arriving
gets its 408). INT and QUIT stop at once. The arbiter's death (we get
re-parented) retires us too.

Running out of file descriptors is not a crash loop: on EMFILE/ENFILE the worker stops
accepting for a moment, logs once per interval with a count, and resumes by itself; and it
never holds more than ``--worker-connections`` connections, so it rarely gets there.
"""

from __future__ import annotations

import errno
import faulthandler
import importlib
import logging
import os
import random
import resource
import select
import signal
import socket
import _socket
import sys
import time
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from prefork.config.logsetup import reopen_log_files
from prefork.config.settings import Config, is_default_hook

from .accesslog import AccessLog
from .balance import AcceptBalance
from .buffers import Budget
from .connection import APP, Connection, IOPolicy
from .environ import base_environ
from .exitcodes import WORKER_OK, ExitCause
from .http import NEED_DATA, Limits
from .linger import Lingerer
from .protocol import Protocol
from .proxy import ForwardedTrust
from .proxyproto import ProxyProtocolError, recv_header
from .reloader import make_watcher
from .statsd import StatsdClient
from .connection import BODY, HEAD, WRITE
from .scoreboard import Slot, State
from .wsgi import WSGIRequestHandler

if TYPE_CHECKING:
    import ssl

    from .exchange import Exchange
    from .http import Request

log = logging.getLogger("prefork.error")

TICK: Final = 1.0
#: Peer addresses whose --forwarded-allow-ips verdict is remembered.
TRUST_CACHE_MAX: Final = 4096
#: How often a worker that stopped accepting (over its share, its cap, or out of fds) looks again.
PAUSED_TICK: Final = 0.05
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
MAX_EVENTS: Final = 256
#: Connections accepted per listener wakeup, at most. The listener reports once per turn of
#: the loop, and a busy turn serves up to MAX_EVENTS connections: 4 a turn left a burst of 1000
#: new connections queued for up to 250 ms. Fairness between workers is AcceptBalance's job.
ACCEPT_BATCH: Final = 64
#: ...and for no longer than this: each accepted connection's request is served at once, so
#: with a slow app a batch would make the clients this worker already has wait for all of it.
ACCEPT_TURN: Final = 0.002
#: A retiring worker accepts at most this many already-queued connections before it closes.
RETIRE_ACCEPT_MAX: Final = 1024
#: A retiring worker gives up on what is left this long before --graceful-timeout ends (a
#: quarter of it, if less): the arbiter counts the same timeout from the signal it sent, so a
#: worker that waited the whole timeout would always be killed, its exit code and the last
#: second of its access log lost, before it could close its slow clients itself.
RETIRE_MARGIN: Final = 0.5
#: After accept() fails for want of file descriptors (or memory), accepting pauses this long.
ACCEPT_BACKOFF: Final = 0.25
#: ... and the failures are logged at most once per this many seconds, with a count.
SHORTAGE_LOG_INTERVAL: Final = 10.0
#: File descriptors a worker keeps for itself (log files, epoll, the app's own) when it sizes
#: its connection cap from RLIMIT_NOFILE; each connection may need a spool file besides.
RESERVED_FDS: Final = 32
_LISTENER_EVENTS: Final = select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0)
_ACCEPT_ERRORS_TO_IGNORE: Final = frozenset({errno.EAGAIN, errno.ECONNABORTED, errno.EPROTO, errno.EINTR})
_ACCEPT_SHORTAGES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Listener:
    """A listening socket plus the environ keys every request accepted on it shares.
    ``preamble``: its connections start with a PROXY header and/or a TLS handshake."""

    __slots__ = ("sock", "fd", "family", "environ", "unix", "ssl_context", "preamble", "socket_type")

    def __init__(self, sock: socket.socket, *, multithread: bool, root_path: str,
                 ssl_context: ssl.SSLContext | None = None, proxy_protocol: bool = False) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.family = int(sock.family)
        self.unix = sock.family == socket.AF_UNIX
        self.ssl_context = ssl_context
        self.preamble = ssl_context is not None or proxy_protocol
        # Plain HTTP needs only the C socket's methods (recv, send, sendmsg, close): without
        # socket.socket's Python-level __init__ a connection costs less. TLS wraps a socket.socket.
        self.socket_type = socket.socket if ssl_context is not None else _socket.socket
        if self.unix:
            name, port = "localhost", ""
        else:
            addr = sock.getsockname()
            name, port = addr[0], str(addr[1])
        self.environ = base_environ(name, port, "http" if ssl_context is None else "https",
                                    multithread=multithread, root_path=root_path)


class _Preamble:
    """A connection that has not reached HTTP yet: its PROXY header (``proxy``) and then its
    TLS handshake (``ssl_context``) are still to come. ``events``: its epoll mask now."""

    __slots__ = ("conn", "proxy", "ssl_context", "events")

    def __init__(self, conn: Connection, proxy: bool, ssl_context: ssl.SSLContext | None) -> None:
        self.conn = conn
        self.proxy = proxy
        self.ssl_context = ssl_context
        self.events = select.EPOLLIN


def connection_cap(cfg: Config) -> int:
    """--worker-connections, or what the open-file limit allows (see RESERVED_FDS)."""
    if cfg.worker_connections:
        return cfg.worker_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(4, (soft - RESERVED_FDS) // 2)


class Worker:
    """Serves requests from the shared listeners until told to stop. See the module docstring."""

    #: The loop closes a connection the moment its response is written (a pool thread hands
    #: it back through a queue instead: see ThreadedWorker).
    CLOSES_AFTER_RESPONSE = True
    #: The app runs on the loop's own thread: a fast stop (INT/QUIT) arriving while it runs
    #: must interrupt it, or the worker would stop only when the request ends.
    APP_ON_LOOP_THREAD = True

    def __init__(self, cfg: Config, app: Callable[..., Iterable[bytes]], sockets: list[socket.socket],
                 slot: Slot, ppid: int, number: int = 1) -> None:
        self.cfg = cfg
        self.log = log  # gunicorn's hooks log through worker.log
        self.app = app
        self.slot = slot
        self.ppid = ppid
        self.number = number
        self.pid = os.getpid()
        self.limits = Limits(request_line=cfg.limit_request_line, fields=cfg.limit_request_fields,
                             field_size=cfg.limit_request_field_size, body=cfg.limit_request_body)
        # ssl and OpenSSL cost ~5 MiB in every process: they are loaded only for TLS.
        self.tls: ModuleType | None = importlib.import_module(".tls", __package__) if cfg.certfile else None
        ssl_context = self.tls.make_context(cfg) if self.tls is not None else None
        self.listeners = {s.fileno(): Listener(s, multithread=cfg.threads > 1, root_path=cfg.root_path,
                                               ssl_context=ssl_context, proxy_protocol=cfg.proxy_protocol)
                          for s in sockets}
        self.proxy = ForwardedTrust(cfg.forwarded_allow_ips)
        self._trusted: dict[str, bool] = {}
        self.proxy_peers = ForwardedTrust(cfg.proxy_allow_ips) if cfg.proxy_protocol else None
        self.access_log = AccessLog.from_config(cfg)  # None when off
        self.statsd = StatsdClient.from_config(cfg)  # None when off
        self.retiring = False
        # Per-request hooks cost a call per request, so they run only when the user set them.
        self.pre_request = None if is_default_hook(cfg.pre_request) else cfg.pre_request
        self.post_request = None if is_default_hook(cfg.post_request) else cfg.post_request
        self.handler = self.make_handler()
        self.budget = self.make_budget()
        self.policy = IOPolicy(cfg.body_timeout, slot.heartbeat, self.budget,
                               cfg.response_buffer_size, cfg.response_spool_max)
        self.protocol = Protocol(self)
        self.conns: dict[int, Connection] = {}
        self.received = self.sent = 0  # client bytes in and out since the last tick
        self.pending: dict[int, _Preamble] = {}  # connections before HTTP: PROXY header, TLS
        self.max_connections = connection_cap(cfg)
        self.max_requests = cfg.max_requests
        if self.max_requests and cfg.max_requests_jitter:
            self.max_requests += random.randint(0, cfg.max_requests_jitter)
        self.rss_limit = cfg.max_worker_memory * 1024 * 1024
        #: before_request / after_request have work to do: hooks or recycling rules
        self.extras = bool(self.pre_request or self.post_request or self.max_requests or self.rss_limit)
        self._statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC) if self.rss_limit else -1
        # --reload: only worker 1 watches, so one edit means one HUP.
        self.watcher = make_watcher(cfg) if cfg.reload and number == 1 else None
        self.balance = AcceptBalance(slot)
        self.accept_paused = False
        self.accept_resume_at = 0.0  # while out of file descriptors: when to try again
        self.shortages = 0           # accept() failures for want of fds since the last message
        self.shortage_logged_at = -SHORTAGE_LOG_INTERVAL
        self.replacement_asked = False  # past --max-requests / --max-worker-memory (after_request)
        self.retire_requested = False
        self.retire_why = "asked to stop"  # what the loop logs when it acts on retire_requested
        self.reopen_requested = False
        self.stop_now = False
        self.retire_deadline = 0.0
        self.epoll = select.epoll()
        #: Closed connections still reading what their client sends after an early response.
        self.lingering = Lingerer(self.epoll, cfg.lingering_time)
        self._wakeup_r = self._wakeup_w = -1

    # -- setup ---------------------------------------------------------------------------------

    def make_handler(self) -> WSGIRequestHandler:
        handler = WSGIRequestHandler(self.app, limits=self.limits, root_path=self.cfg.root_path,
                                     server_header=self.cfg.server_header, proxy=self.proxy)
        handler.keep_alive_allowed = self.cfg.keepalive > 0 and not self.retiring
        handler.close_follows = self.CLOSES_AFTER_RESPONSE and self.post_request is None
        return handler

    def make_budget(self) -> Budget:
        return Budget(self.cfg.worker_buffer_memory, self.cfg.worker_tmp_dir)

    def _install_signals(self) -> None:
        """Handlers only set flags; the wakeup pipe makes epoll return so the loop sees them."""
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        self.epoll.register(self._wakeup_r, select.EPOLLIN)
        signal.signal(signal.SIGTERM, self._on_retire)
        signal.signal(signal.SIGINT, self._on_stop_now)
        signal.signal(signal.SIGQUIT, self._on_stop_now)
        signal.signal(signal.SIGUSR1, self._on_reopen)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the arbiter reloads; a worker just retires
        # SIGABRT from the arbiter (heartbeat timeout): dump every thread's stack where we hang.
        # On since boot (boot.run_worker); again now, as the app's import may have replaced the
        # error log's handlers (a logging dictConfig) and closed the stream faulthandler held.
        faulthandler.enable(file=error_log_stream(), all_threads=True)
        if not is_default_hook(self.cfg.worker_abort):  # its hook needs Python's handler
            signal.signal(signal.SIGABRT, self._on_abort)

    def _on_retire(self, signum: int, frame: Any) -> None:
        self.retire_requested = True

    def _on_stop_now(self, signum: int, frame: Any) -> None:
        self.stop_now = True
        self.run_hook(self.cfg.worker_int, self)
        if self.APP_ON_LOOP_THREAD and self.slot.in_request():
            raise StopNow  # out of the app, to the loop's exit (see run); gunicorn's sync worker exits the same way

    def _on_abort(self, signum: int, frame: Any) -> None:
        """The stack, as faulthandler would write it, then gunicorn's worker_abort; die of SIGABRT."""
        faulthandler.dump_traceback(error_log_stream(), all_threads=True)
        self.run_hook(self.cfg.worker_abort, self)
        os.abort()

    def _on_reopen(self, signum: int, frame: Any) -> None:
        self.reopen_requested = True

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; the return value is the process exit code."""
        self._install_signals()
        for fd, listener in self.listeners.items():
            listener.sock.setblocking(False)
            self.epoll.register(fd, _LISTENER_EVENTS)
        self.epoll.register(self.balance.fd, select.EPOLLIN | select.EPOLLET)
        now = time.monotonic()
        self.slot.set_pid(os.getpid())
        self.slot.ready(now)  # also wakes the arbiter: it may be waiting for us to finish a reload
        listeners = self.listeners
        conns = self.conns
        heartbeats, beat_at = self.slot.heartbeat_cell()  # a plain store per turn, no call
        next_tick = now + TICK
        poll = self.epoll.poll
        on_readable = self.protocol.on_readable
        advance = self.protocol.advance
        statsd = self.statsd
        balance = self.balance
        published = -1
        try:
            while not self.stop_now:
                events = poll(PAUSED_TICK if self.accept_paused else TICK, MAX_EVENTS)
                now = time.monotonic()
                heartbeats[beat_at] = now
                for fd, _ in events:
                    conn = conns.get(fd)
                    if conn is not None:
                        if conn.state == WRITE:  # EPOLLOUT: the socket takes more of the response
                            advance(conn, now)
                        else:
                            on_readable(conn)
                    elif fd in listeners:
                        self._on_listener(listeners[fd], now)
                    elif fd == self._wakeup_r:
                        self._on_wakeup()
                    elif fd in self.pending:
                        self._advance_preamble(self.pending[fd])
                    elif fd in self.lingering.socks:
                        self.lingering.on_readable(fd, now)
                    elif fd == balance.fd:
                        self._on_peer_paused()
                if self.retire_requested and not self.retiring:
                    self.retire(self.retire_why)
                if self.retiring:
                    if listeners:
                        self._stop_listening(now)
                    if now >= self.retire_deadline:
                        self._expire(now)  # a head or body still arriving gets its 408
                        break
                    if self._drained():
                        break
                open_connections = self._open_connections()
                if open_connections != published:  # (steady keep-alive: no store at all)
                    balance.publish(open_connections)
                    published = open_connections
                if self.accept_paused and self._may_accept(open_connections, now):
                    self._set_accepting(True)
                if statsd is not None:
                    statsd.flush()
                if now >= next_tick:
                    next_tick = now + TICK
                    self._tick(now)
        except StopNow:
            pass  # INT/QUIT while the app ran: the request is abandoned; close up as below
        self._close_all()
        self._publish()
        if self.access_log is not None:
            self.access_log.close()
        if statsd is not None:
            statsd.close()
        return WORKER_OK

    def _on_wakeup(self) -> None:
        try:
            while os.read(self._wakeup_r, 64):
                pass
        except BlockingIOError:
            pass
        if self.reopen_requested:
            self.reopen_requested = False
            reopen_log_files()
            if self.access_log is not None:
                self.access_log.reopen()

    def _tick(self, now: float) -> None:
        """Once a second: write the access log; publish to the scoreboard; drop connections
        past their deadline; notice an orphaned worker or a changed source file."""
        if self.access_log is not None:
            self.access_log.flush()
        self._publish()
        self._expire(now)
        if not self.retiring and os.getppid() != self.ppid:
            self.request_retire("the arbiter is gone")
        if self.watcher is not None and not self.retiring:
            changed = self.watcher.changed()
            if changed:
                log.info("Source changed: %s; asking the arbiter to reload", changed)
                self.watcher.close()
                self.watcher = None  # the next generation watches again
                os.kill(self.ppid, signal.SIGHUP)

    def _expire(self, now: float) -> None:
        """End the connections whose deadline in their state has passed."""
        for preamble in [p for p in self.pending.values() if p.conn.deadline <= now]:
            self._drop_preamble(preamble, "no PROXY header or TLS handshake in time")
        expire = self.protocol.expire
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            if self.conns.get(conn.fd) is conn:  # not closed by an earlier expiry this tick
                expire(conn, now)
        self.lingering.expire(now)

    def _publish(self) -> None:
        """Connections by state, bytes buffered and moved, request counters: what `prefork
        status` and the metrics read, published once a second (and when the worker exits)."""
        counts = [0, 0, 0, 0]  # head, body, app, write
        idle = buffered = 0
        for conn in self.conns.values():
            state = conn.state
            if state == HEAD and not conn.buf:
                idle += 1
            else:
                counts[state] += 1
            if conn.body is not None:
                buffered += conn.body.buffered()
            if conn.out is not None:
                buffered += conn.out.pending()
        self.slot.set_connection_gauges(counts[HEAD] + len(self.pending), counts[BODY],
                                        counts[WRITE], idle, len(self.lingering.socks), buffered)
        self.slot.add_traffic(self.received + self.lingering.received, self.sent)
        self.received = self.sent = self.lingering.received = 0
        self.slot.publish_counts()

    def request_retire(self, why: str) -> None:
        """Ask the loop to retire us at the end of this turn (safe from anywhere, any thread)."""
        self.retire_why = why
        self.retire_requested = True

    def retire(self, why: str) -> None:
        """Stop accepting; finish what is in flight (see the module docstring). Only changes
        state: the loop takes the connections still queued and closes the listeners."""
        log.info("Worker %d retiring: %s", os.getpid(), why)
        self.retiring = True
        self.handler.keep_alive_allowed = False
        grace = self.cfg.graceful_timeout
        self.retire_deadline = time.monotonic() + grace - min(RETIRE_MARGIN, grace / 4)
        self.slot.set_state(State.RETIRING)
        self._set_accepting(False)
        for conn in self.conns.values():
            conn.deadline = min(conn.deadline, self.retire_deadline)
        for preamble in self.pending.values():
            preamble.conn.deadline = min(preamble.conn.deadline, self.retire_deadline)
        if self.access_log is not None:
            self.access_log.flush()

    def _stop_listening(self, now: float) -> None:
        """EPOLLEXCLUSIVE may have woken only us for a connection that is still queued: take
        every queued one now (we left epoll, so no new wakeup can pick us) and serve it,
        rather than leave it waiting for a wakeup that went to a retiring worker."""
        listeners = list(self.listeners.values())
        self.listeners.clear()
        for listener in listeners:
            for _ in range(RETIRE_ACCEPT_MAX):
                if not self._accept(listener, now):
                    break
            listener.sock.close()

    # -- accepting, evenly and within limits (workers/balance.py) ------------------------------

    def _open_connections(self) -> int:
        return len(self.conns) + len(self.pending) + len(self.lingering.socks)

    def _may_accept(self, open_connections: int, now: float) -> bool:
        return (not self.retiring and now >= self.accept_resume_at
                and open_connections < self.max_connections and self.balance.fair(open_connections))

    def _on_listener(self, listener: Listener, now: float) -> None:
        """Accept what is queued: up to a batch and ACCEPT_TURN of serving what came with it,
        then back to the loop (the rest stays queued: this or an idle worker takes it next);
        and only while within our share (the balance keeps the other workers in the game) and
        our cap."""
        stop_at = time.monotonic() + ACCEPT_TURN  # (not `now`: the turn may be well on)
        for _ in range(ACCEPT_BATCH):
            open_connections = self._open_connections()
            if open_connections >= self.max_connections:
                self._set_accepting(False)
                return
            if not self.balance.fair(open_connections):
                self._set_accepting(False)
                self.balance.poke()
                return
            if not self._accept(listener, now) or time.monotonic() >= stop_at:
                return

    def _on_peer_paused(self) -> None:
        """A peer stopped accepting, maybe leaving queued connections no wakeup will report
        to us: registering the listeners again makes epoll look at the queue now."""
        if not self.accept_paused and self.listeners:
            self._set_accepting(False)
            self._set_accepting(True)

    def _set_accepting(self, accepting: bool) -> None:
        if accepting == (not self.accept_paused):
            return
        for fd in self.listeners:
            if accepting:
                self.epoll.register(fd, _LISTENER_EVENTS)
            else:
                self.epoll.unregister(fd)
        self.accept_paused = not accepting

    def _out_of_descriptors(self, exc: OSError, now: float) -> None:
        """accept() failed for want of fds or memory: retrying at once would spin (the
        connection stays queued and epoll says so again). Pause, count, log now and then."""
        self.shortages += 1
        self.accept_resume_at = now + ACCEPT_BACKOFF
        self._set_accepting(False)
        if now - self.shortage_logged_at >= SHORTAGE_LOG_INTERVAL:
            log.warning("accept() failed: %s (%d times); pausing accepts for %gs, holding %d "
                        "connections (--worker-connections %d)", exc.strerror, self.shortages,
                        ACCEPT_BACKOFF, self._open_connections(), self.max_connections)
            self.shortage_logged_at = now
            self.shortages = 0

    # -- connections ---------------------------------------------------------------------------

    def _accept(self, listener: Listener, now: float) -> bool:
        """Accept one connection and serve what it already sent; False if none was queued."""
        try:
            # socket.accept() is this plus a Python-level enum conversion of family and type
            # for every connection; the listener knows both as plain ints already.
            fd, addr = listener.sock._accept()
            sock = listener.socket_type(listener.family, socket.SOCK_STREAM, 0, fd)
        except OSError as exc:
            if exc.errno in _ACCEPT_SHORTAGES:
                self._out_of_descriptors(exc, now)
            elif exc.errno not in _ACCEPT_ERRORS_TO_IGNORE:
                log.warning("accept() failed: %s", exc)
            return False
        sock.setblocking(False)
        if listener.unix:
            remote, port = "", ""
        else:
            remote, port = addr[0], str(addr[1])
        if listener.preamble:
            self._begin_preamble(listener, sock, remote, port, now)
            return True
        conn = Connection(sock, listener.environ, remote, port, self._trusts(remote), self.policy,
                          now + self.cfg.head_timeout)
        self.conns[conn.fd] = conn
        # Serve first, watch after: with TCP_DEFER_ACCEPT the request is usually here already,
        # and a `Connection: close` request is then answered and closed without ever costing
        # an epoll_ctl.
        self.protocol.on_readable(conn)
        self.settle(conn)
        return True

    def settle(self, conn: Connection) -> None:
        """After a pass outside epoll (a new connection, one back from a pool thread): put it
        in epoll, waiting for what its state waits for, unless it is closed or in APP."""
        if self.conns.get(conn.fd) is conn and not conn.registered and conn.state != APP:
            self.epoll.register(conn.fd, conn.events)
            conn.registered = True

    def _trusts(self, remote: str) -> bool:
        """--forwarded-allow-ips for a peer, parsed once per address (clients reconnect)."""
        trusted = self._trusted.get(remote)
        if trusted is None:
            trusted = self.proxy.trusts(remote)
            if len(self._trusted) < TRUST_CACHE_MAX:
                self._trusted[remote] = trusted
        return trusted

    # -- before HTTP: PROXY header, TLS handshake ----------------------------------------------

    def _begin_preamble(self, listener: Listener, sock: socket.socket, remote: str, port: str,
                        now: float) -> None:
        """Like a request head, the PROXY header and the TLS handshake are read as epoll
        reports bytes, so a client that stalls costs a buffer, not the worker; both together
        get the head timeout. The connection joins ``conns`` once HTTP can start."""
        peers = self.proxy_peers
        if peers is not None and not peers.trusts(remote):
            log.debug("connection from %s closed: not in --proxy-allow-from", remote)
            sock.close()
            return
        conn = Connection(sock, listener.environ, remote, port, False, self.policy,
                          now + self.cfg.head_timeout)
        preamble = _Preamble(conn, peers is not None, listener.ssl_context)
        self.pending[conn.fd] = preamble
        self.epoll.register(conn.fd, select.EPOLLIN)
        self._advance_preamble(preamble)

    def _advance_preamble(self, preamble: _Preamble) -> None:
        """Take the next step epoll allows: read the PROXY header, then drive the handshake,
        waiting for EPOLLIN or EPOLLOUT as OpenSSL asks. Invalid input closes the connection;
        the client address and its X-Forwarded-* trust are settled before HTTP starts."""
        conn = preamble.conn
        try:
            if preamble.proxy:
                header = recv_header(conn.sock, conn.buf)
                if header is NEED_DATA:
                    return
                preamble.proxy = False
                if header.source is not None:  # type: ignore[union-attr]
                    conn.remote_addr, port = header.source  # type: ignore[union-attr]
                    conn.remote_port = str(port)
            if preamble.ssl_context is not None:
                if type(conn) is Connection:  # wrapped only now: the PROXY header is not TLS
                    sock = preamble.ssl_context.wrap_socket(conn.sock, server_side=True,
                                                            do_handshake_on_connect=False)
                    conn = preamble.conn = self.tls.TLSConnection(  # type: ignore[union-attr]
                        sock, conn.environ, conn.remote_addr, conn.remote_port, False,
                        self.policy, conn.deadline)
                events = conn.handshake()
                if events:
                    if events != preamble.events:
                        self.epoll.modify(conn.fd, events)
                        preamble.events = events
                    return
        except (ProxyProtocolError, OSError) as exc:  # ssl.SSLError is an OSError
            self._drop_preamble(preamble, str(exc))
            return
        del self.pending[conn.fd]
        if preamble.events != select.EPOLLIN:
            self.epoll.modify(conn.fd, select.EPOLLIN)
        conn.registered = True
        conn.trusted = self._trusts(conn.remote_addr)
        self.conns[conn.fd] = conn
        self.protocol.on_readable(conn)

    def _drop_preamble(self, preamble: _Preamble, why: str) -> None:
        log.debug("connection from %s closed before HTTP: %s",
                  preamble.conn.remote_addr or "a unix socket", why)
        del self.pending[preamble.conn.fd]
        preamble.conn.close()

    # -- the application -----------------------------------------------------------------------

    def before_request(self, req: Request) -> None:
        if self.pre_request is not None:
            self.run_hook(self.pre_request, self, req)

    def after_request(self, req: Request, exchange: Exchange, handler: WSGIRequestHandler) -> None:
        """The post_request hook and the recycling rules, after each app call when there are
        any (any thread)."""
        if self.post_request is not None:
            self.run_hook(self.post_request, self, req, exchange.environ, handler)
        if self.retiring or self.retire_requested or self.replacement_asked:
            return
        if self.max_requests and self.slot.requests() >= self.max_requests:
            self.ask_replacement(ExitCause.MAX_REQUESTS, f"served {self.max_requests} requests (--max-requests)")
        elif self.rss_limit and self._rss() > self.rss_limit:
            self.ask_replacement(ExitCause.MAX_MEMORY,
                                 f"memory above {self.cfg.max_worker_memory} MiB (--max-worker-memory)")

    def ask_replacement(self, cause: ExitCause, why: str) -> None:
        """Recycling: ask the arbiter, once, to boot our replacement, and serve on. It retires
        us (TERM) only when the replacement is ready; retiring ourselves would cost capacity
        for the whole boot, and all of it if the code now on disk cannot boot."""
        self.replacement_asked = True
        log.info("Worker %d %s: asking the arbiter for a replacement", os.getpid(), why)
        self.slot.ask_replacement(cause)

    def _rss(self) -> int:
        """Resident memory in bytes: one pread of /proc/self/statm, kept open (cheaper than a
        psutil call per request, and the same number)."""
        return int(os.pread(self._statm, 128, 0).split()[1]) * _PAGE_SIZE

    def run_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("Exception in %s hook", getattr(hook, "__name__", "request"))

    # -- closing -------------------------------------------------------------------------------

    def _drained(self) -> bool:
        """A retiring worker may exit: no connection left, none still before its first request,
        none lingering (its client may still be sending into an early answer; as nginx's
        workers do, wait for it, within the graceful timeout)."""
        return not self._open_connections()

    def close(self, conn: Connection, linger: bool = False) -> None:
        """Forget a connection and close it; a response still parked is logged as cut short.
        ``linger``: the client may still be sending (we answered before reading all of its
        request): read on and discard before the close (workers/linger.py)."""
        if conn.exchange is not None:
            self.protocol.end_exchange(conn, time.monotonic())
        del self.conns[conn.fd]
        if linger:
            conn.release()
            if self.lingering.start(conn.sock, conn.registered, time.monotonic()):
                return
        conn.close()

    def _close_all(self) -> None:
        for conn in list(self.conns.values()):
            self.close(conn)
        self.lingering.close_all()
        for preamble in self.pending.values():
            preamble.conn.close()
        self.pending.clear()


class StopNow(BaseException):
    """Raised by the INT/QUIT handler inside the app (see Worker._on_stop_now). A
    BaseException, so that the app's ``except Exception`` and the handler's 500 path let it
    through."""


def error_log_stream() -> Any:
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
