"""The arbiter: owns the listening sockets and the workers' lives.

Verbs used throughout:
    spawn   fork a worker for a generation
    reap    collect a dead worker's exit status (``waitpid``) and free its slot
    retire  ask a worker to stop gracefully (SIGTERM): no new connections, in-flight finished
    abort   a worker whose heartbeat stalled past ``--timeout`` gets SIGABRT, so its
            ``faulthandler`` writes the stuck Python stack to the error log
    kill    SIGKILL: for an aborted worker that did not die, or at the end of a stop

The loop, top to bottom: sleep (until a signal arrives on the wakeup pipe, or the next
deadline, at most 1 s) -> reap -> apply queued signals -> maintain the workers -> check
heartbeats. Signal handlers only enqueue; nothing else happens in them.

Generations make reloads gap-free: HUP starts generation g+1 beside g; only when every new
worker reports READY in the scoreboard are the old ones retired. If a new worker cannot boot,
the reload is abandoned and generation g never noticed. Heartbeats are compared with
CLOCK_MONOTONIC, which no wall-clock jump moves, so a clock change never kills workers.
"""

from __future__ import annotations

import collections
import importlib
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from setproctitle import setproctitle

from prefork.config.appload import AppLoadError, load_app, prepare_sys_path
from prefork.config.binds import parse_bind
from prefork.config.cli import load_config
from prefork.config.logsetup import reopen_log_files, setup_logging
from prefork.config.settings import Config, ConfigError
from prefork.workers.exitcodes import APP_LOAD_ERROR, BOOT_FAILURES, WORKER_BOOT_ERROR
from prefork.workers.scoreboard import (HEARTBEAT, RETIRE_CAUSE, RETIRE_CAUSES, STATE, WORDS_PER_SLOT,
                                       Scoreboard, State)
from prefork.workers.boot import check_worker_settings, run_worker

from . import __version__
from .control import ControlServer
from .metrics import Metrics
from .notify import Notifier, successor_environ
from .pidfile import remove_pidfile, write_pidfile
from .sockets import BindError, Listener, bind, export, open_listeners

log = logging.getLogger("prefork.error")

SIGNALS: Final = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGTTIN,
                  signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)
MAX_QUEUED_SIGNALS: Final = 16
TICK: Final = 1.0
#: After SIGABRT, how long a hung worker has to write its stack and die before SIGKILL.
ABORT_GRACE: Final = 3.0
#: How long a fast stop (INT/QUIT) waits for workers before SIGKILL.
FAST_STOP_GRACE: Final = 2.0
#: Crash-loop backoff for workers that die before becoming ready.
BACKOFF_START: Final = 0.1
BACKOFF_MAX: Final = 16.0
#: Exit code when the app cannot boot at start-up (gunicorn uses the same).
EXIT_BOOT_FAILED: Final = 3
#: USR2 hand-over: the new arbiter finds the old one's pid and a pipe to report "ready" on.
ENV_UPGRADE_FROM: Final = "PREFORK_UPGRADE_FROM"
ENV_UPGRADE_FD: Final = "PREFORK_UPGRADE_FD"


@dataclass
class WorkerProcess:
    """The arbiter's record of one worker."""

    pid: int
    slot: int
    generation: int
    number: int
    spawned_at: float
    ready: bool = False
    retiring: bool = False
    retire_cause: str = ""  # scale, reload, max_requests, max_memory (metrics' restart causes)
    aborted_at: float = 0.0
    killed: bool = False


class Arbiter:
    """Runs until stopped; ``run()`` returns the process exit code."""

    def __init__(self, cfg: Config, argv: Sequence[str] | None = None,
                 app: Callable[..., Iterable[bytes]] | None = None, start_cwd: str | None = None) -> None:
        self.cfg = cfg
        self.log = log  # gunicorn's hooks log through server.log
        self.argv = list(argv) if argv is not None else None
        #: An app object handed to the Python API is used for every generation; otherwise the
        #: app is preloaded here (--preload, re-imported on HUP) or imported by each worker.
        self.fixed_app = app
        self.app = app
        self.start_cwd = start_cwd or os.getcwd()
        self.base_modules = set(sys.modules)
        self.pid = os.getpid()
        self.started = time.time()  # wall clock: uptime in `prefork status`, process_start_time_seconds
        self.closing_listeners: list[Listener] = []  # dropped from the config by a pending reload
        self.upgrade_pid = 0
        self.upgrade_pipe = -1
        self.handed_over = False
        self.listeners: list[Listener] = []
        self.scoreboard = Scoreboard()
        self.workers: dict[int, WorkerProcess] = {}
        self.generation = 1
        self.newest_generation = 1  # never reused, so an abandoned reload's stragglers stay apart
        self.pending: tuple[int, Config] | None = None  # a reload's generation being booted
        #: Reloads begun, and how the latest one ended ({"number", "ok", "message"}), for
        #: `prefork ctl reload`, which waits for the outcome (control.py's status).
        self.reloads = 0
        self.last_reload: dict[str, object] | None = None
        self.booted = False   # a worker of ours became ready at least once
        self.serving = False  # the whole first generation did (READY=1 sent)
        self.stopping = False
        self.stop_deadline = 0.0
        self.exit_code = 0
        self.signal_queue: collections.deque[int] = collections.deque()
        self.backoff = 0.0
        self.next_spawn_at = 0.0
        self.notifier = Notifier.from_environ()
        self.next_watchdog = 0.0
        self._wakeup_r = self._wakeup_w = -1
        #: Extra fds the loop watches (control socket, metrics listener): fd -> callback run in
        #: the main loop when the fd is readable. Callbacks must not block.
        self.readers: dict[int, Callable[[], None]] = {}
        # Workers poke this eventfd when they become ready, so a reload completes at once
        # rather than on the next tick.
        self.readers[self.scoreboard.balance_fd] = self._drain_worker_pokes
        self.control = ControlServer(self)  # `prefork status` / `prefork ctl` (control.py)
        self.metrics = Metrics(self)        # totals of reaped workers, --metrics-bind, STATUS=
        self.handlers: dict[int, Callable[[], None]] = {
            signal.SIGHUP: self.reload,
            signal.SIGTERM: lambda: self.stop(graceful=True),
            signal.SIGINT: lambda: self.stop(graceful=False),
            signal.SIGQUIT: lambda: self.stop(graceful=False),
            signal.SIGTTIN: lambda: self.scale(+1),
            signal.SIGTTOU: lambda: self.scale(-1),
            signal.SIGUSR1: self.reopen_logs,
            signal.SIGUSR2: self.upgrade,
        }

    @property
    def name(self) -> str:
        return _display_name(self.cfg)

    # -- start and stop ------------------------------------------------------------------------

    def run(self) -> int:
        if self.cfg.umask is not None:  # unset: keep the umask we inherited (systemd's UMask=)
            os.umask(self.cfg.umask)
        try:
            self.listeners = open_listeners(self.cfg.bind, self.cfg.backlog, os.environ)
        except BindError as exc:
            log.error("%s", exc)
            return 1
        if self.fixed_app is None and self.cfg.preload_app:
            try:
                self.app = load_app(self.cfg.app)  # type: ignore[arg-type]
            except AppLoadError as exc:
                log.error("Failed to load the application: %s", exc)
                self._close_listeners()
                return 1
        if self.cfg.pidfile and ENV_UPGRADE_FROM not in os.environ:
            write_pidfile(self.cfg.pidfile, self.pid)
        self._install_signals()
        setproctitle(f"prefork: arbiter [{self.name}]")
        self._hook("on_starting", self)
        log.info("Starting prefork %s", __version__)
        for listener in self.listeners:
            log.info("Listening at: %s (%d)", listener.url(tls=bool(self.cfg.certfile)), self.pid)
        self._hook("when_ready", self)  # gunicorn's meaning: listening, workers not yet forked
        if ENV_UPGRADE_FROM not in os.environ:  # a USR2 successor opens them at the hand-over
            self.control.open()
            self.metrics.open()
        try:
            self._loop()
        finally:
            self._shutdown()
        return self.exit_code

    def _install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        """NO LOGGING, NO WORK: queue the signal for the main loop (CHLD needs no entry: the
        wakeup pipe already woke the loop, which reaps every turn)."""
        if signum != signal.SIGCHLD and len(self.signal_queue) < MAX_QUEUED_SIGNALS:
            self.signal_queue.append(signum)

    def stop(self, graceful: bool) -> None:
        """TERM: retire every worker and exit when they are done (or at --graceful-timeout).
        INT/QUIT: stop them now."""
        if self.stopping and graceful:
            return
        log.info("Handling signal: %s (%s stop)", "TERM" if graceful else "INT/QUIT",
                 "graceful" if graceful else "fast")
        self.notifier.stopping()
        self.stopping = True
        grace = self.cfg.graceful_timeout if graceful else FAST_STOP_GRACE
        self.stop_deadline = time.monotonic() + grace
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        for worker in self.workers.values():
            self._signal(worker, sig)
            worker.retiring = True

    def _shutdown(self) -> None:
        """Whatever ended the loop: no worker outlives us, the sockets close, files go."""
        for worker in self.workers.values():
            self._signal(worker, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.workers and time.monotonic() < deadline:
            self.reap(block=True)
        self._close_listeners()
        if self.cfg.pidfile:
            remove_pidfile(self.cfg.pidfile, self.pid)
        self.control.close()
        self.metrics.close()
        self._hook("on_exit", self)
        log.info("Shutting down: %s", "Master" if self.exit_code == 0 else f"exit code {self.exit_code}")

    def _close_listeners(self) -> None:
        """Close our copies; unix socket files go too unless a new arbiter now serves them."""
        for listener in self.listeners:
            listener.close(unlink=not self.handed_over)

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        self.maintain(time.monotonic())
        while True:
            self._sleep()
            now = time.monotonic()
            self.reap()
            if self.exit_code:
                return
            while self.signal_queue:
                self.handlers[self.signal_queue.popleft()]()
            self.control.tick(now)  # expire stalled clients, finish sends
            self.metrics.tick(now)  # the same, retry a busy --metrics-bind, STATUS= every 5 s
            self._notify_watchdog(now)  # also while stopping: a long graceful stop is not a hang
            if self.stopping:
                if not self.workers:
                    return
                if now >= self.stop_deadline:
                    log.warning("Graceful timeout reached: killing %d worker(s)", len(self.workers))
                    return
                continue
            self.maintain(now)
            self.check_heartbeats(now)

    def _sleep(self) -> None:
        now = time.monotonic()
        timeout = TICK
        if self.next_spawn_at > now:
            timeout = min(timeout, self.next_spawn_at - now)
        if self.stopping:
            timeout = min(timeout, max(self.stop_deadline - now, 0.0))
        if self.next_watchdog:  # WatchdogSec= may ask for pings more often than the tick
            timeout = min(timeout, max(self.next_watchdog - now, 0.0))
        try:
            ready, _, _ = select.select([self._wakeup_r, *self.readers], [], [], timeout)
        except InterruptedError:
            return
        for fd in ready:
            if fd == self._wakeup_r:
                try:
                    while os.read(self._wakeup_r, 512):
                        pass
                except BlockingIOError:
                    pass
            elif fd in self.readers:
                self.readers[fd]()

    # -- reaping -------------------------------------------------------------------------------

    def reap(self, block: bool = False) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                if pid == self.upgrade_pid:
                    self._upgrade_failed(f"the new arbiter {_describe_status(status)}")
                continue
            self._note_ready(worker)  # it may have become ready since the last turn
            self.metrics.account_reaped(worker, status)  # its final counts, before the slot goes
            self.scoreboard.release(worker.slot)
            self._on_worker_exit(worker, status)
            if block:
                return

    def _on_worker_exit(self, worker: WorkerProcess, status: int) -> None:
        why = _describe_exit(status, worker)
        code = os.waitstatus_to_exitcode(status)
        if worker.retiring or self.stopping:
            log.info("Worker exiting (pid: %d)%s", worker.pid, "" if code == 0 else f": {why}")
            return
        if worker.ready:
            log.error("Worker (pid: %d) %s; replacing it", worker.pid, why)
            return
        # Died before it ever became ready: a boot failure.
        if self.pending is not None and worker.generation == self.pending[0]:
            self._abandon_reload(f"a new worker failed to boot ({why})")
            return
        if not self.booted and code in BOOT_FAILURES:
            log.error("Worker failed to boot (pid: %d, %s): shutting down", worker.pid, why)
            self.exit_code = EXIT_BOOT_FAILED if code == WORKER_BOOT_ERROR else APP_LOAD_ERROR
            return
        self.backoff = min(max(self.backoff * 2, BACKOFF_START), BACKOFF_MAX)
        self.next_spawn_at = time.monotonic() + self.backoff
        log.error("Worker (pid: %d) died before becoming ready (%s); next attempt in %.1fs",
                  worker.pid, why, self.backoff)

    # -- maintaining the workers ---------------------------------------------------------------

    def maintain(self, now: float) -> None:
        """Note who became ready; keep each live generation at its size; finish a reload."""
        for worker in self.workers.values():
            self._note_ready(worker)
        self.scoreboard.set_roster(sorted(w.slot for w in self.workers.values() if w.ready and not w.retiring))
        self._fill(self.generation, self.cfg, now, respect_backoff=True)
        if not self.serving and self._generation_ready(self.generation, self.cfg):
            self.serving = True
            self._on_ready()
        if self.pending is not None:
            generation, cfg = self.pending
            self._fill(generation, cfg, now, respect_backoff=False)
            if self._generation_ready(generation, cfg):
                self._commit_reload(generation, cfg)

    def _note_ready(self, worker: WorkerProcess) -> None:
        state = self.scoreboard.ints[worker.slot * WORDS_PER_SLOT + STATE]
        if state == State.RETIRING and not worker.retiring:
            # It retires itself (--max-requests, --max-worker-memory): its replacement boots now,
            # while it finishes, so capacity never drops.
            worker.retiring = True
            worker.retire_cause = RETIRE_CAUSES[self.scoreboard.ints[worker.slot * WORDS_PER_SLOT + RETIRE_CAUSE]]
        if worker.ready or state < State.READY:
            return
        worker.ready = True
        self.backoff = 0.0
        if worker.generation == self.generation:
            self.booted = True  # the app can boot: later boot failures back off, never halt

    def _fill(self, generation: int, cfg: Config, now: float, respect_backoff: bool) -> None:
        active = sorted((w for w in self.workers.values() if w.generation == generation and not w.retiring),
                        key=lambda w: w.spawned_at)
        for worker in active[:max(len(active) - cfg.workers, 0)]:  # TTOU: the oldest go first
            self._retire(worker, "fewer workers requested", "scale")
        missing = cfg.workers - len(active)
        if respect_backoff and now < self.next_spawn_at:
            return
        used = {w.number for w in active}
        numbers = (n for n in range(1, cfg.workers + len(used) + 1) if n not in used)
        for _ in range(missing):
            self.spawn(generation, cfg, next(numbers))
            if respect_backoff and self.backoff:
                return  # in a crash loop: one attempt per backoff step

    def spawn(self, generation: int, cfg: Config, number: int) -> None:
        now = time.monotonic()
        slot = self.scoreboard.claim(generation, now)
        worker = WorkerProcess(pid=0, slot=slot, generation=generation, number=number, spawned_at=now)
        self._hook("pre_fork", self, worker)
        # A signal arriving between fork() and the child's own handlers would run the
        # arbiter's handler in the child and be lost (a TERM meant to retire a half-born worker
        # of an abandoned reload, say). Blocked here, it waits for the child's handlers.
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        pid = os.fork()
        if pid == 0:
            self._run_child(worker, cfg)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        worker.pid = pid
        self.workers[pid] = worker
        log.info("Booting worker with pid: %d", pid)

    def _run_child(self, worker: WorkerProcess, cfg: Config) -> None:
        """In the forked child: shed the arbiter's signal plumbing, serve, and exit. Never returns."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            self.control.close_after_fork()  # else a worker holds control/metrics clients open
            self.metrics.close_after_fork()
            worker.pid = os.getpid()
            setproctitle(f"prefork: worker {worker.number} [{_display_name(cfg)}]")
            self._hook("post_fork", self, worker)
            sockets = [l.sock for l in self.listeners if l not in self.closing_listeners]
            code = run_worker(cfg, self.app, sockets, self.scoreboard.slot(worker.slot), self.pid,
                              worker.number)
            self._hook("worker_exit", self, worker)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("Worker crashed")
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _retire(self, worker: WorkerProcess, why: str, cause: str) -> None:
        if not worker.retiring:
            worker.retire_cause = cause
            log.info("Retiring worker %d (pid: %d): %s", worker.number, worker.pid, why)
            worker.retiring = True
            self._signal(worker, signal.SIGTERM)

    def _generation_ready(self, generation: int, cfg: Config) -> bool:
        active = [w for w in self.workers.values() if w.generation == generation and not w.retiring]
        return len(active) >= cfg.workers and all(w.ready for w in active)

    def _drain_worker_pokes(self) -> None:
        try:
            os.eventfd_read(self.scoreboard.balance_fd)
        except BlockingIOError:
            pass

    def _on_ready(self) -> None:
        """Every worker of the first generation serves: tell systemd (and a USR2 predecessor)."""
        if ENV_UPGRADE_FROM in os.environ:
            self._complete_handover()
        self.notifier.ready(self.status_line())

    # -- heartbeats ----------------------------------------------------------------------------

    def check_heartbeats(self, now: float) -> None:
        """Abort workers whose heartbeat is older than --timeout; kill those that ignore it."""
        timeout = self.cfg.timeout
        if timeout <= 0:
            return
        floats = self.scoreboard.floats
        for worker in self.workers.values():
            if worker.aborted_at:
                if not worker.killed and now - worker.aborted_at > ABORT_GRACE:
                    log.error("Worker (pid: %d) did not exit after SIGABRT; killing it", worker.pid)
                    self._signal(worker, signal.SIGKILL)
                    worker.killed = True
                continue
            idle = now - floats[worker.slot * WORDS_PER_SLOT + HEARTBEAT]
            if idle > timeout:
                log.critical("WORKER TIMEOUT (pid: %d): no heartbeat for %.1fs; aborting it "
                             "(its stack follows in this log)", worker.pid, idle)
                worker.aborted_at = now
                self._signal(worker, signal.SIGABRT)

    # -- signals' actions ----------------------------------------------------------------------

    def reload(self) -> None:
        """HUP: re-read the configuration and boot a new generation beside the current one.
        Whatever fails before the new workers are ready leaves the current generation alone."""
        log.info("Handling signal: HUP (reload)")
        if self.pending is not None:
            self._abandon_reload("superseded by a newer HUP")
        self.reloads += 1
        self.notifier.reloading()
        try:
            cfg = self._reread_config()
            self._open_new_listeners(cfg)
            if self.fixed_app is None and cfg.preload_app:
                self.app = self._reimport_app(cfg)
        except (ConfigError, BindError, AppLoadError) as exc:
            self._reload_ended(False, f"Reload abandoned: {exc}; generation {self.generation} keeps serving")
            self._forget_new_listeners()
            self.notifier.ready(self.status_line())
            return
        self._hook("on_reload", self)
        self.newest_generation += 1
        self.pending = (self.newest_generation, cfg)
        self.maintain(time.monotonic())

    def _reread_config(self) -> Config:
        """The configuration as a fresh start would read it: from the directory we started in
        (relative -c paths, ./pyproject.toml), then --chdir/--pythonpath applied again."""
        if self.argv is None:
            return self.cfg
        os.chdir(self.start_cwd)
        try:
            cfg = load_config(self.argv)
        finally:
            prepare_sys_path(self.cfg)
        prepare_sys_path(cfg)
        check_worker_settings(cfg)
        return cfg

    def _reimport_app(self, cfg: Config) -> Callable[..., Iterable[bytes]]:
        """--preload on HUP: forget every module imported since start-up, import the app again."""
        previous = {name: module for name, module in sys.modules.items() if name not in self.base_modules}
        for name in previous:
            del sys.modules[name]
        importlib.invalidate_caches()
        try:
            return load_app(cfg.app)  # type: ignore[arg-type]
        except AppLoadError:
            sys.modules.update(previous)  # keep serving the code we had
            raise

    def _open_new_listeners(self, cfg: Config) -> None:
        """Bind addresses the new configuration adds; mark the ones it drops for closing once
        the new generation serves. Unchanged listeners are never touched."""
        if not cfg.bind:
            return
        wanted = [str(parse_bind(text)) for text in cfg.bind]
        have = {l.bind or l.name for l in self.listeners}
        for address in wanted:
            if address not in have:
                if address.startswith("fd://"):
                    raise BindError(f"--bind {address}: a reload cannot adopt a socket it was not "
                                    "started with; restart (or USR2) to add one")
                listener = bind(parse_bind(address), cfg.backlog)
                listener.sock.set_inheritable(True)
                self.listeners.append(listener)
                log.info("Listening at: %s (%d)", listener.url(tls=bool(self.cfg.certfile)), self.pid)
        self.closing_listeners = [l for l in self.listeners if l.bind is not None and l.bind not in wanted]

    def _forget_new_listeners(self) -> None:
        """An abandoned reload closes what it opened; nothing of the old set is touched."""
        keep = {l.bind or l.name for l in self.listeners} if not self.cfg.bind else \
            {str(parse_bind(text)) for text in self.cfg.bind}
        for listener in list(self.listeners):
            if listener.bind is not None and listener.bind not in keep and listener not in self.closing_listeners:
                listener.close(unlink=True)
                self.listeners.remove(listener)
        self.closing_listeners = []
        export(self.listeners, os.environ)

    def _commit_reload(self, generation: int, cfg: Config) -> None:
        for worker in list(self.workers.values()):
            if worker.generation < generation:
                self._retire(worker, f"replaced by generation {generation}", "reload")
        for listener in self.closing_listeners:
            log.info("Closing listener %s (no longer configured)", listener.name)
            listener.close(unlink=True)
            self.listeners.remove(listener)
        self.closing_listeners = []
        export(self.listeners, os.environ)
        if _logging_settings(cfg) != _logging_settings(self.cfg):
            setup_logging(cfg)  # a new --error-logfile / --log-level takes effect with the reload
        self.generation = generation
        self.cfg = cfg
        self.pending = None
        self._reload_ended(True, f"Reload complete: generation {generation} serving")
        self.notifier.ready(self.status_line())

    def _abandon_reload(self, why: str) -> None:
        generation, _ = self.pending  # type: ignore[misc]
        self._reload_ended(False, f"Reload abandoned: {why}; generation {self.generation} keeps serving")
        for worker in self.workers.values():
            if worker.generation == generation:
                self._retire(worker, "reload abandoned", "reload")
        self.pending = None
        self._forget_new_listeners()
        self.notifier.ready(self.status_line())

    def _reload_ended(self, ok: bool, message: str) -> None:
        """Log how this reload ended, and keep it for `prefork ctl reload` to report."""
        log.log(logging.INFO if ok else logging.ERROR, "%s", message)
        self.last_reload = {"number": self.reloads, "ok": ok, "message": message}

    def scale(self, delta: int) -> None:
        """TTIN / TTOU: one worker more or less, never fewer than one."""
        self.cfg.workers = max(1, self.cfg.workers + delta)
        log.info("Handling signal: %s: %d worker(s) wanted", "TTIN" if delta > 0 else "TTOU", self.cfg.workers)

    def reopen_logs(self) -> None:
        """USR1: reopen log files (after logrotate moved them) here and in every worker."""
        log.info("Handling signal: USR1 (reopen log files)")
        reopen_log_files()
        for worker in self.workers.values():
            self._signal(worker, signal.SIGUSR1)

    def upgrade(self) -> None:
        """USR2: exec a new arbiter (same argv, whatever code and venv are on disk now) on the
        same sockets. It tells us on a pipe when its workers serve; then we retire ours and
        exit. If it dies first, we never stopped serving."""
        log.info("Handling signal: USR2 (upgrade)")
        if self.upgrade_pid:
            log.warning("Upgrade already in progress (new arbiter pid %d); USR2 ignored", self.upgrade_pid)
            return
        if self.argv is None:
            log.error("Upgrade needs the prefork command line; this arbiter was started from Python")
            return
        command = _exec_command(self.argv)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_end)
                os.set_inheritable(write_end, True)
                env = successor_environ(os.environ, os.getpid())
                env[ENV_UPGRADE_FROM] = str(self.pid)
                env[ENV_UPGRADE_FD] = str(write_end)
                os.chdir(self.start_cwd)
                os.execve(command[0], command, env)
            finally:
                os._exit(127)
        os.close(write_end)
        self.upgrade_pid = pid
        self.upgrade_pipe = read_end
        self.readers[read_end] = self._on_upgrade_message
        log.info("Upgrade: started new arbiter (pid: %d): %s", pid, " ".join(command))

    def _on_upgrade_message(self) -> None:
        try:
            message = os.read(self.upgrade_pipe, 64)
        except OSError:
            message = b""
        if message.startswith(b"ready"):
            log.info("Upgrade: new arbiter (pid: %d) is serving; retiring this one", self.upgrade_pid)
            self._close_upgrade_pipe()
            self.handed_over = True
            self.stop(graceful=True)
        elif not message:
            self._close_upgrade_pipe()  # it died before it was ready; reap() tells why

    def _upgrade_failed(self, why: str) -> None:
        log.error("Upgrade failed: %s; this arbiter keeps serving", why)
        self.upgrade_pid = 0
        self._close_upgrade_pipe()
        if self.cfg.pidfile:
            write_pidfile(self.cfg.pidfile, self.pid)
        self.notifier.mainpid(self.pid)

    def _close_upgrade_pipe(self) -> None:
        if self.upgrade_pipe >= 0:
            self.readers.pop(self.upgrade_pipe, None)
            os.close(self.upgrade_pipe)
            self.upgrade_pipe = -1

    def _complete_handover(self) -> None:
        """In the new arbiter, once its workers serve: take over the pidfile and systemd's
        MAINPID, then tell the old arbiter to retire."""
        old_pid = os.environ.pop(ENV_UPGRADE_FROM)
        fd = int(os.environ.pop(ENV_UPGRADE_FD, "-1"))
        if self.cfg.pidfile:
            write_pidfile(self.cfg.pidfile, self.pid)
        self.control.open()  # takes the path over, as the pidfile
        self.metrics.open(defer=True)  # once the old arbiter has let the address go
        self.notifier.mainpid(self.pid)
        try:
            os.write(fd, b"ready\n")
            os.close(fd)
        except OSError as exc:
            log.warning("Upgrade: could not tell the old arbiter (pid %s) we are ready: %s", old_pid, exc)
        log.info("Upgrade: serving; the old arbiter (pid: %s) retires", old_pid)

    # -- helpers -------------------------------------------------------------------------------

    def status_line(self) -> str:
        ready = sum(1 for w in self.workers.values() if w.ready and not w.retiring)
        return f"{ready} worker(s) ready, generation {self.generation}"

    def _notify_watchdog(self, now: float) -> None:
        interval = self.notifier.watchdog_interval()
        if interval and now >= self.next_watchdog:
            self.notifier.watchdog()
            self.next_watchdog = now + interval

    def _signal(self, worker: WorkerProcess, sig: int) -> None:
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def _hook(self, name: str, *args: Any) -> None:
        """Run a user hook; its failure is logged with its name and never stops the arbiter."""
        hook = getattr(self.cfg, name, None)
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            log.exception("Exception in %s hook", name)


def _logging_settings(cfg: Config) -> tuple[Any, ...]:
    return cfg.errorlog, cfg.loglevel, cfg.logconfig


def _display_name(cfg: Config) -> str:
    """What ps shows in brackets: --name, else the app spec."""
    return cfg.proc_name or cfg.app or "wsgi"


def _describe_exit(status: int, worker: WorkerProcess) -> str:
    """A worker's wait status in operator language."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL and not worker.killed:
            return f"{_describe_status(status)} (perhaps out of memory?)"
        if sig == signal.SIGABRT and worker.aborted_at:
            return "was aborted after its heartbeat timed out"
        return _describe_status(status)
    code = os.waitstatus_to_exitcode(status)
    if code == APP_LOAD_ERROR:
        return "could not load the application (exit code 4)"
    if code == WORKER_BOOT_ERROR:
        return "could not boot (exit code 3)"
    return _describe_status(status)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"was killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"was killed by signal {sig}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def _exec_command(argv: list[str]) -> list[str]:
    """How to start this program again: by the path it was started with (so a venv or
    symlink switched underneath takes effect), or ``python -m prefork.server``."""
    script = sys.argv[0]
    if os.path.basename(script) != "__main__.py" and os.access(script, os.X_OK):
        return [os.path.abspath(script), *argv]
    return [sys.executable, "-m", "prefork.server", *argv]

