"""The arbiter: owns the listening sockets and the workers' lives.

The loop, top to bottom: sleep (until a signal or a watched fd wakes it, or the next deadline,
at most 1 s) -> reap -> act on what the exits mean -> apply queued signals -> tick the
services -> maintain the workers -> announce readiness -> commit a ready reload -> check
heartbeats. Signal handlers only enqueue (signals.py); nothing else happens in them.

The arbiter keeps the loop and the policy; each collaborator has one job and its own page:

    workerset.py  spawn, reap, retire, abort, kill; generations
    exits.py      why each worker left: one reading for the log, the metrics and the policy
    listeners.py  the listening sockets, and what a reload adds and drops
    reload.py     HUP: start a new generation, commit it when ready, or abandon it
    upgrade.py    USR2: hand the sockets to a new arbiter, from either side
    shutdown.py   TERM: announce the stop, serve --shutdown-delay longer, then stop
    appsource.py  the app new workers inherit (serve()'s object, --preload) or import
    startup.py    the checks before all this, shared by the command line and serve()
    signals.py    handlers that only enqueue, and the loop's wakeup pipe
    control.py, metrics.py   `prefork status` / `ctl` and Prometheus, through a read-only view
    notify.py     systemd's sd_notify; every call to it is made here, in the arbiter

Heartbeats are compared with CLOCK_MONOTONIC, which no wall-clock jump moves, so a clock change
never kills workers.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from setproctitle import setproctitle

from prefork.config.appload import AppLoadError
from prefork.config.logsetup import reopen_log_files
from prefork.config.settings import Config
from prefork.workers.exitcodes import APP_LOAD_ERROR, BOOT_FAILURES, WORKER_BOOT_ERROR
from prefork.workers.scoreboard import Scoreboard
from prefork.workers.statsd import StatsdClient

from . import __version__
from .appsource import AppSource, WSGIApp
from .control import ControlServer
from .listeners import ListenerSet
from .metrics import Metrics
from .notify import Notifier
from .pidfile import remove_pidfile, write_pidfile
from .reload import Reload
from .shutdown import ShutdownDelay
from .signals import SignalQueue
from .sockets import BindError
from .upgrade import Upgrade, is_successor, take_over
from .view import ServerView
from .exits import WorkerExit
from .workerset import WorkerSet, display_name

log = logging.getLogger("prefork.error")

TICK: Final = 1.0
#: How long a fast stop (INT/QUIT) waits for workers before SIGKILL.
FAST_STOP_GRACE: Final = 2.0
#: Exit code when the app cannot boot at start-up (gunicorn uses the same).
EXIT_BOOT_FAILED: Final = 3
#: systemd's STATUS= line is refreshed at most this often.
STATUS_INTERVAL: Final = 5.0


class Arbiter:
    """Runs until stopped; ``run()`` returns the process exit code. gunicorn's server hooks
    receive it as ``server`` (``server.pid``, ``server.cfg``, ``server.log``)."""

    def __init__(self, cfg: Config, argv: Sequence[str] | None = None,
                 app: WSGIApp | None = None, start_cwd: str | None = None) -> None:
        self.cfg = cfg
        self.log = log
        self.argv = list(argv) if argv is not None else None
        self.start_cwd = start_cwd or os.getcwd()
        self.pid = os.getpid()
        self.serving = False  # the whole first generation is ready (READY=1 sent)
        self.stop_deadline = 0.0
        self.stopping_fast = False  # INT/QUIT: the deadline is FAST_STOP_GRACE
        self.exit_code = 0
        self.next_watchdog = 0.0
        self.next_status = 0.0
        #: Every fd the loop sleeps on (the signals' wakeup pipe, the workers' ready eventfd, the
        #: control and metrics sockets, a USR2 pipe): fd -> callback run in the main loop when
        #: the fd is readable. Callbacks must not block.
        self.readers: dict[int, Callable[[], None]] = {}
        self.signals = SignalQueue()
        self.scoreboard = Scoreboard()
        self.readers[self.scoreboard.ready_fd] = self.scoreboard.take_ready_news
        self.workers = WorkerSet(self.scoreboard, self.signals, self._hook, self._shed_in_child)
        self.listeners = ListenerSet()
        self.app_source = AppSource(app)
        self.notifier = Notifier.from_environ()
        self.reload = Reload(self.argv, self.start_cwd, self.workers, self.listeners, self.app_source,
                             self.notifier, self._hook)
        self.upgrade = Upgrade(self.readers, self.workers, self.notifier, self._on_replaced, self._hook)
        self.view = ServerView(self.pid, self.workers, lambda: self.cfg, self.listeners,
                               self.reload.outcomes, self.upgrade.outcomes, self.reload.history)
        self.shutdown = ShutdownDelay(self.scoreboard, self.notifier)
        self.control = ControlServer(self.view, self.signals.enqueue, self.readers)
        self.metrics = Metrics(self.view, self.readers)
        self.statsd = StatsdClient.from_config(cfg)  # the gunicorn.workers gauge; None when off
        self.handlers: dict[int, Callable[[], None]] = {
            signal.SIGHUP: self.start_reload,
            signal.SIGTERM: self.term,
            signal.SIGINT: self.fast_stop,
            signal.SIGQUIT: self.fast_stop,
            signal.SIGTTIN: lambda: self.scale(+1),
            signal.SIGTTOU: lambda: self.scale(-1),
            signal.SIGUSR1: self.reopen_logs,
            signal.SIGUSR2: lambda: self.upgrade.start(self.argv, self.start_cwd, self.cfg.pidfile),
        }

    @property
    def name(self) -> str:
        return display_name(self.cfg)

    # -- the life of the server ----------------------------------------------------------------

    def run(self) -> int:
        if not self._start():
            return 1
        try:
            self._loop()
        finally:
            self._shutdown()
        return self.exit_code

    def _loop(self) -> None:
        self.maintain(time.monotonic())
        while True:
            self.sleep()
            now = time.monotonic()
            exits = self.workers.reap()
            self.record(exits)
            self.reload.abandon_if_boot_failed(exits, self.cfg)
            if self.halt_if_app_cannot_boot(exits):
                return
            self.back_off_after_boot_failures(exits)
            for sig in self.signals.pop():
                self.handlers[sig]()
            if self.shutdown.due(now):
                self.stop(graceful=True, what="Shutdown delay over: graceful stop")
            self.tick_services(now)
            if self.workers.stopping:
                if self.stop_finished(now):
                    return
                continue
            self.maintain(now)
            self.announce_ready()
            self.commit_reload()
            self.workers.check_heartbeats(now, self.cfg.timeout)

    # -- start and stop ------------------------------------------------------------------------

    def _start(self) -> bool:
        """Sockets, a preloaded app, pidfile, signals, hooks, services. False: cannot start
        (the reason is logged)."""
        if self.cfg.umask is not None:  # unset: keep the umask we inherited (systemd's UMask=)
            os.umask(self.cfg.umask)
        try:
            self.listeners.open(self.cfg, os.environ)
        except BindError as exc:
            log.error("%s", exc)
            return False
        try:
            self.app_source.load(self.cfg)
        except AppLoadError as exc:
            log.error("Failed to load the application: %s", exc)
            self.listeners.close(unlink=True)
            return False
        if self.cfg.pidfile and not is_successor():
            write_pidfile(self.cfg.pidfile, self.pid)
        self.signals.install()
        self.readers[self.signals.wakeup_fd] = self.signals.drain_wakeup
        setproctitle(f"prefork: arbiter [{self.name}]")
        self._hook("nworkers_changed", self.cfg.workers, None)  # gunicorn: set the first time
        self._hook("on_starting")
        log.info("Starting prefork %s", __version__)
        self.listeners.log_listening(self.cfg)
        self._hook("when_ready")  # gunicorn's meaning: listening, workers not yet forked
        if not is_successor():  # a USR2 successor opens them at the hand-over
            self._open_services()
        return True

    def term(self) -> None:
        """TERM: the graceful stop, after --shutdown-delay (shutdown.py) unless one runs."""
        if self.workers.stopping or not self.shutdown.postpone(self.cfg.shutdown_delay, time.monotonic()):
            self.stop(graceful=True, what="Handling signal: TERM (graceful stop)")

    def fast_stop(self) -> None:
        """INT / QUIT: stop the workers now."""
        self.stop(graceful=False, what="Handling signal: INT/QUIT (fast stop)")

    def stop(self, graceful: bool, what: str) -> None:
        """Graceful: retire every worker and exit when they are done (or at --graceful-timeout).
        Fast: stop them now. ``what`` is the log line saying what started the stop (a signal,
        the end of --shutdown-delay, a USR2 successor taking over)."""
        if self.workers.stopping and graceful:
            return
        log.info("%s", what)
        self.notifier.stopping()
        self.stopping_fast = not graceful
        grace = self.cfg.graceful_timeout if graceful else FAST_STOP_GRACE
        self.stop_deadline = time.monotonic() + grace
        self.workers.stop(signal.SIGTERM if graceful else signal.SIGQUIT)

    def stop_finished(self, now: float) -> bool:
        """While stopping: done when every worker is gone, or at the deadline."""
        if not len(self.workers):
            return True
        if now >= self.stop_deadline:
            if self.stopping_fast:
                log.warning("Fast stop: killing %d worker(s) still running after %gs",
                            len(self.workers), FAST_STOP_GRACE)
            else:
                log.warning("Graceful timeout reached (--graceful-timeout %gs): killing %d worker(s)",
                            self.cfg.graceful_timeout, len(self.workers))
            return True
        return False

    def _shutdown(self) -> None:
        """Whatever ended the loop: no worker outlives us, the sockets close, files go."""
        self.record(self.workers.kill_all())
        self.listeners.close(unlink=not self.upgrade.has_successor)  # its sockets too
        if self.cfg.pidfile:
            remove_pidfile(self.cfg.pidfile, self.pid)
        self.control.close()
        self.metrics.close()
        self._hook("on_exit")
        log.info("Shutting down: %s", "Master" if self.exit_code == 0 else f"exit code {self.exit_code}")

    # -- the loop's steps ----------------------------------------------------------------------

    def sleep(self) -> None:
        """Until a watched fd is readable (a signal, a ready worker, a client) or the next
        deadline: a spawn after backoff, the end of a stop, a watchdog ping, a metrics bind;
        at most TICK."""
        now = time.monotonic()
        timeout = min(TICK, self.shutdown.wait(now), self.metrics.wait(now))
        if self.workers.next_spawn_at > now:
            timeout = min(timeout, self.workers.next_spawn_at - now)
        if self.workers.stopping:
            timeout = min(timeout, max(self.stop_deadline - now, 0.0))
        if self.next_watchdog:  # WatchdogSec= may ask for pings more often than the tick
            timeout = min(timeout, max(self.next_watchdog - now, 0.0))
        try:
            ready, _, _ = select.select(list(self.readers), [], [], timeout)
        except InterruptedError:
            return
        for fd in ready:
            if fd in self.readers:  # an earlier callback may have closed it
                self.readers[fd]()

    def record(self, exits: list[WorkerExit]) -> None:
        """Count each reaped worker in the metrics; log the exits nobody else reports (a boot
        failure is reported by the step that acts on it)."""
        self.metrics.count_exits(exits)
        for exit in exits:
            if exit.expected:
                log.info("Worker exiting (pid: %d)%s", exit.worker.pid, "" if exit.code == 0 else f": {exit.why}")
            elif exit.worker.ready:
                log.error("Worker (pid: %d) %s; replacing it", exit.worker.pid, exit.why)

    def halt_if_app_cannot_boot(self, exits: list[WorkerExit]) -> bool:
        """Before any worker ever became ready, one that cannot boot means none can: set the
        exit code (3 or 4, as gunicorn) rather than fork-loop. An import aborted at --timeout
        is such a failure too (3): the next one would take as long."""
        for exit in exits:
            if not exit.failed_boot or exit.of_pending or self.workers.booted:
                continue
            if exit.worker.aborted_at:
                log.error("Worker failed to boot (pid: %d): the app took longer than --timeout %gs to "
                          "load; raise --timeout (its stack is above): shutting down",
                          exit.worker.pid, self.cfg.timeout)
                self.exit_code = EXIT_BOOT_FAILED
            elif exit.code in BOOT_FAILURES:
                log.error("Worker failed to boot (pid: %d, %s): shutting down", exit.worker.pid, exit.why)
                self.exit_code = EXIT_BOOT_FAILED if exit.code == WORKER_BOOT_ERROR else APP_LOAD_ERROR
        return bool(self.exit_code)

    def back_off_after_boot_failures(self, exits: list[WorkerExit]) -> None:
        """The app booted before, so a failure now is transient: retry, ever more slowly."""
        for exit in exits:
            if exit.failed_boot and not exit.of_pending:
                self.workers.back_off(exit.worker, exit.why)

    def tick_services(self, now: float) -> None:
        self.control.tick(now)  # expire stalled clients, finish sends
        self.metrics.tick(now)  # the same, retry a busy --metrics-bind
        self.notify_systemd(now)  # also while stopping: a long graceful stop is not a hang
        if self.statsd is not None:
            self.statsd.workers(len(self.workers))
            self.statsd.flush()

    def maintain(self, now: float) -> None:
        """Note who became ready; keep the serving generation and a reload's at their size."""
        self.workers.note_ready()
        sockets = self.listeners.for_workers()
        app = self.app_source.app
        self.workers.fill(self.workers.generation, self.cfg, app, sockets, now, respect_backoff=True)
        if self.reload.cfg is not None and self.workers.pending is not None:
            self.workers.fill(self.workers.pending, self.reload.cfg, app, sockets, now, respect_backoff=False)

    def announce_ready(self) -> None:
        """Once, when every worker of the first generation serves: take over from a USR2
        predecessor if we have one, and tell systemd (READY=1)."""
        if self.serving or not self.workers.generation_ready(self.workers.generation, self.cfg.workers):
            return
        self.serving = True
        if is_successor():
            take_over(self.cfg.pidfile, self.notifier, lambda: self._open_services(defer_metrics=True))
        self.notifier.ready(self.workers.status_line())

    def commit_reload(self) -> None:
        """A reload whose generation is all ready becomes the serving configuration."""
        cfg = self.reload.commit_if_ready(self.cfg)
        if cfg is not None:
            wanted, self.cfg = self.cfg.workers, cfg
            if cfg.workers != wanted:
                self._hook("nworkers_changed", cfg.workers, wanted)
            if self.statsd is not None:
                self.statsd.close()
            self.statsd = StatsdClient.from_config(cfg)  # --statsd-host may have changed

    def notify_systemd(self, now: float) -> None:
        """The periodic sd_notify messages: WATCHDOG=1 as often as WatchdogSec= asks, and a
        STATUS= line every STATUS_INTERVAL once a worker has booted (READY=1 says it first)."""
        interval = self.notifier.watchdog_interval()
        if interval and now >= self.next_watchdog:
            self.notifier.watchdog()
            self.next_watchdog = now + interval
        if self.notifier.enabled and self.workers.booted and now >= self.next_status:
            self.next_status = now + STATUS_INTERVAL
            self.notifier.status(f"{self.workers.status_line()}, {self.metrics.totals().requests} requests served")

    # -- signals' actions ----------------------------------------------------------------------

    def start_reload(self) -> None:
        """HUP: re-read the configuration and boot a new generation beside the current one."""
        self.reload.start(self.cfg)
        self.maintain(time.monotonic())

    def scale(self, delta: int) -> None:
        """TTIN / TTOU: one worker more or less, never fewer than one."""
        wanted = self.cfg.workers
        self.cfg.workers = max(1, wanted + delta)
        log.info("Handling signal: %s: %d worker(s) wanted", "TTIN" if delta > 0 else "TTOU", self.cfg.workers)
        if self.cfg.workers != wanted:
            self._hook("nworkers_changed", self.cfg.workers, wanted)

    def reopen_logs(self) -> None:
        """USR1: reopen log files (after logrotate moved them) here and in every worker."""
        log.info("Handling signal: USR1 (reopen log files)")
        reopen_log_files()
        self.workers.send_all(signal.SIGUSR1)

    def _on_replaced(self) -> None:
        """USR2: the new arbiter serves. Free the metrics address for it now, and stop."""
        self.metrics.close()
        self.stop(graceful=True, what=f"Upgrade: replaced by the new arbiter (pid: {self.upgrade.pid}); "
                                      "retiring the workers")

    # -- helpers -------------------------------------------------------------------------------

    def _open_services(self, defer_metrics: bool = False) -> None:
        self.control.open()
        self.metrics.open(defer=defer_metrics)

    def _shed_in_child(self) -> None:
        """In a forked worker: let go of the control and metrics clients (else a worker would
        hold their connections open after the arbiter closed them)."""
        self.control.close_after_fork()
        self.metrics.close_after_fork()

    def _hook(self, name: str, *args: Any) -> None:
        """Run a user hook as gunicorn does, with this arbiter as ``server``; its failure is
        logged with its name and never stops the arbiter."""
        hook = getattr(self.cfg, name, None)
        if hook is None:
            return
        try:
            hook(self, *args)
        except Exception:
            log.exception("Exception in %s hook", name)
