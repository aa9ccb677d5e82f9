"""The worker set: the arbiter's worker processes, their generations, and why each one left.

Verbs (the arbiter's docstring uses the same):
    spawn   fork a worker for a generation
    reap    collect a dead worker's exit status (``waitpid``) and free its slot
    retire  ask a worker to stop gracefully (SIGTERM): no new connections, in-flight finished
    abort   a worker whose heartbeat stalled past ``--timeout`` gets SIGABRT, so its
            ``faulthandler`` writes the stuck Python stack to the error log
    kill    SIGKILL: for an aborted worker that did not die, or at the end of a stop

Recycling costs no capacity either: a worker past ``--max-requests`` or ``--max-worker-memory``
only asks, through its slot, to be replaced, and serves on (``recycle``); :meth:`WorkerSet.fill`
boots its replacement and retires it once the replacement is ready. A replacement that cannot
boot (new code on disk after an abandoned reload, say) backs off like any boot failure while
the old worker keeps serving: its limit overruns rather than the server losing a worker.

Generations make reloads gap-free: ``generation`` serves; a reload boots ``pending`` beside it
and, once every new worker is ready, :meth:`WorkerSet.promote` makes it the serving one.
Generation numbers are never reused, so an abandoned reload's stragglers stay apart.

Every reaped worker becomes a :class:`~prefork.server.exits.WorkerExit` (exits.py) that says,
once, why it left. The set decides nothing about the server's fate: the arbiter reads the exits
and acts (abandon a reload, halt, back off).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from setproctitle import setproctitle

from prefork.config.settings import Config
from prefork.workers.boot import run_worker
from prefork.workers.exitcodes import ExitCause
from prefork.workers.scoreboard import Scoreboard, SlotView, State

from .appsource import WSGIApp
from .exits import WorkerExit, explain_exit
from .signals import SignalQueue

log = logging.getLogger("prefork.error")

#: After SIGABRT, how long a hung worker has to write its stack and die before SIGKILL.
ABORT_GRACE: Final = 3.0
#: Crash-loop backoff for workers that die before becoming ready.
BACKOFF_START: Final = 0.1
BACKOFF_MAX: Final = 16.0
#: How long the final stop waits for SIGKILLed workers to be reaped.
KILL_WAIT: Final = 5.0


@dataclass
class WorkerProcess:
    """The arbiter's record of one worker (gunicorn's hooks receive it as ``worker``: ``pid``,
    ``age`` and ``log`` mean what they mean there)."""

    pid: int
    slot: int
    generation: int
    number: int
    spawned_at: float
    age: int = 0  # gunicorn's: how many workers this arbiter had spawned, this one included
    ready: bool = False
    retiring: bool = False
    retire_cause: ExitCause = ExitCause.NONE
    #: It asked to be replaced (MAX_REQUESTS, MAX_MEMORY): it serves until its replacement is ready.
    recycle: ExitCause = ExitCause.NONE
    aborted_at: float = 0.0
    killed: bool = False
    log: ClassVar[logging.Logger] = log

    def state_name(self, view: SlotView) -> str:
        """The scoreboard's word for it, except that a worker the arbiter has asked to retire
        is "retiring" even before it has noticed."""
        if self.retiring and view.state in (State.BOOTING, State.READY, State.BUSY):
            return State.RETIRING.name.lower()
        return view.state.name.lower()


def display_name(cfg: Config) -> str:
    """What ps shows in brackets: --name, else the app spec."""
    return cfg.proc_name or cfg.app or "wsgi"


class WorkerSet:
    """The live workers, keyed by pid, and the generations they belong to.

    ``hook(name, *args)`` runs a user hook (the arbiter prepends itself as ``server``);
    ``shed_in_child()`` closes, in a freshly forked worker, whatever of the arbiter's it must
    not keep (control and metrics clients).
    """

    def __init__(self, scoreboard: Scoreboard, signals: SignalQueue, hook: Callable[..., None],
                 shed_in_child: Callable[[], None]) -> None:
        self.scoreboard = scoreboard
        self.signals = signals
        self.hook = hook
        self.shed_in_child = shed_in_child
        self.by_pid: dict[int, WorkerProcess] = {}
        #: Children that are not workers (a USR2 successor): pid -> what to do with its status.
        self.others: dict[int, Callable[[int], None]] = {}
        self.generation = 1          # the serving generation
        self.newest_generation = 1
        self.pending: int | None = None  # a reload's generation being booted
        self.booted = False    # a worker of the serving generation became ready at least once
        self.spawned = 0       # workers forked so far: the next one's age
        self.stopping = False
        self.backoff = 0.0
        self.next_spawn_at = 0.0

    def __iter__(self) -> Iterator[WorkerProcess]:
        return iter(self.by_pid.values())

    def __len__(self) -> int:
        return len(self.by_pid)

    def views(self) -> list[tuple[WorkerProcess, SlotView]]:
        return [(worker, self.scoreboard.view(worker.slot)) for worker in self.by_pid.values()]

    def ready_count(self) -> int:
        return sum(1 for w in self.by_pid.values() if w.ready and not w.retiring)

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        return f"{self.ready_count()} worker(s) ready, generation {self.generation}"

    # -- generations ---------------------------------------------------------------------------

    def new_generation(self) -> int:
        """Number a reload's generation; it boots beside the serving one until promoted."""
        self.newest_generation += 1
        self.pending = self.newest_generation
        return self.pending

    def promote(self, generation: int) -> None:
        """The reload's generation serves: retire every older worker."""
        for worker in list(self.by_pid.values()):
            if worker.generation < generation:
                self.retire(worker, f"replaced by generation {generation}", ExitCause.RELOAD)
        self.generation = generation
        self.pending = None

    def drop_pending(self) -> None:
        """An abandoned reload: retire what its generation booted so far."""
        for worker in self.by_pid.values():
            if worker.generation == self.pending:
                self.retire(worker, "reload abandoned", ExitCause.RELOAD)
        self.pending = None

    def generation_ready(self, generation: int, size: int) -> bool:
        active = [w for w in self.by_pid.values() if w.generation == generation and not w.retiring]
        return len(active) >= size and all(w.ready for w in active)

    # -- keeping generations at size -----------------------------------------------------------

    def note_ready(self) -> None:
        """Read each worker's state from the scoreboard; publish who accepts (the roster)."""
        for worker in self.by_pid.values():
            self._note_ready(worker)
        self.scoreboard.set_roster(sorted(w.slot for w in self.by_pid.values() if w.ready and not w.retiring))

    def _note_ready(self, worker: WorkerProcess) -> None:
        state = self.scoreboard.state(worker.slot)
        if state == State.RETIRING and not worker.retiring:
            # It retires itself (a TERM someone else sent it): its replacement boots now.
            worker.retiring = True
            worker.retire_cause = self.scoreboard.retire_cause(worker.slot)
        if not worker.recycle and not worker.retiring:
            worker.recycle = self.scoreboard.retire_cause(worker.slot)
            if worker.recycle:
                log.info("Recycling worker %d (pid: %d, %s): it serves until its replacement is ready",
                         worker.number, worker.pid, worker.recycle.label)
        if worker.ready or state < State.READY:
            return
        worker.ready = True
        self.backoff = 0.0
        if worker.generation == self.generation:
            self.booted = True  # the app can boot: later boot failures back off, never halt

    def fill(self, generation: int, cfg: Config, app: WSGIApp | None, sockets: list[Any],
             now: float, respect_backoff: bool) -> None:
        """Keep ``cfg.workers`` workers that stay (all but those being recycled): retire the
        oldest above that (TTOU), retire recycled workers whose replacements are ready, spawn
        the missing ones (one per backoff step while in a crash loop, when ``respect_backoff``).
        A recycled worker counts neither towards a surplus nor as a worker that stays, so it
        never makes fill() retire a healthy worker or spawn twice."""
        active = [w for w in self.by_pid.values() if w.generation == generation and not w.retiring]
        staying = sorted((w for w in active if not w.recycle), key=lambda w: w.spawned_at)
        surplus = max(len(staying) - cfg.workers, 0)
        for worker in staying[:surplus]:  # TTOU: the oldest go first
            self.retire(worker, "fewer workers requested", ExitCause.SCALE)
        staying = staying[surplus:]
        self._retire_recycled([w for w in active if w.recycle], staying, cfg.workers)
        missing = cfg.workers - len(staying)
        if respect_backoff and now < self.next_spawn_at:
            return
        used = {w.number for w in staying}  # a replacement may take its predecessor's number
        numbers = (n for n in range(1, cfg.workers + len(used) + 1) if n not in used)
        for _ in range(missing):
            self.spawn(generation, cfg, next(numbers), app, sockets)
            if respect_backoff and self.backoff:
                return  # in a crash loop: one attempt per backoff step

    def _retire_recycled(self, recycled: list[WorkerProcess], staying: list[WorkerProcess],
                         size: int) -> None:
        """Retire recycled workers, oldest first, only while the ready workers that stay plus
        the recycled ones left exceed ``size``: recycling never lowers the serving count."""
        ready = sum(1 for w in staying if w.ready)
        recycled.sort(key=lambda w: w.spawned_at)
        while recycled and ready + len(recycled) > size:
            worker = recycled.pop(0)
            self.retire(worker, f"recycled ({worker.recycle.label}): enough workers serve without it", worker.recycle)

    def back_off(self, worker: WorkerProcess, why: str) -> None:
        """A worker died before becoming ready: wait longer before the next attempt. Workers
        waiting for a replacement serve on meanwhile; the line says so."""
        self.backoff = min(max(self.backoff * 2, BACKOFF_START), BACKOFF_MAX)
        self.next_spawn_at = time.monotonic() + self.backoff
        waiting = sum(1 for w in self.by_pid.values() if w.recycle and not w.retiring)
        log.error("Worker (pid: %d) died before becoming ready (%s); next attempt in %.1fs%s",
                  worker.pid, why, self.backoff,
                  f"; {waiting} worker(s) due for recycling serve on until a replacement boots" if waiting else "")

    # -- spawn and reap ------------------------------------------------------------------------

    def spawn(self, generation: int, cfg: Config, number: int, app: WSGIApp | None,
              sockets: list[Any]) -> None:
        now = time.monotonic()
        slot = self.scoreboard.claim(generation, now)
        self.spawned += 1
        worker = WorkerProcess(pid=0, slot=slot, generation=generation, number=number, spawned_at=now,
                               age=self.spawned)
        self.hook("pre_fork", worker)
        ppid = os.getpid()
        with self.signals.blocked():
            pid = os.fork()
            if pid == 0:
                self._run_child(worker, cfg, app, sockets, ppid)
        worker.pid = pid
        self.by_pid[pid] = worker
        log.info("Booting worker with pid: %d", pid)

    def _run_child(self, worker: WorkerProcess, cfg: Config, app: WSGIApp | None,
                   sockets: list[Any], ppid: int) -> None:
        """In the forked child: shed the arbiter's plumbing, serve, and exit. Never returns."""
        code = 1
        try:
            self.signals.reset_in_child()
            self.shed_in_child()
            worker.pid = os.getpid()
            setproctitle(f"prefork: worker {worker.number} [{display_name(cfg)}]")
            self.hook("post_fork", worker)
            code = run_worker(cfg, app, sockets, self.scoreboard.slot(worker.slot), ppid, worker.number)
            self.hook("worker_exit", worker)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("Worker crashed")
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def reap(self, block: bool = False) -> list[WorkerExit]:
        """Collect every exited child (one worker, when ``block``): a worker becomes a
        WorkerExit and frees its slot; any other child goes to its callback in ``others``, or
        is just collected (as PID 1 we inherit every orphan). Without workers there is no one
        to block for: a blocking call returns at once rather than wait on an orphan."""
        exits: list[WorkerExit] = []
        while not block or self.by_pid:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == 0:
                break
            worker = self.by_pid.pop(pid, None)
            if worker is None:
                if pid in self.others:
                    self.others.pop(pid)(status)
                continue
            self._note_ready(worker)  # it may have become ready since the last turn
            final = self.scoreboard.view(worker.slot)  # before the slot goes
            self.scoreboard.release(worker.slot)
            cause, why = explain_exit(worker, status, self.stopping)
            exits.append(WorkerExit(worker, status, final, cause, why,
                                    expected=worker.retiring or self.stopping,
                                    of_pending=worker.generation == self.pending))
            self.hook("child_exit", worker)
            if block:
                break
        return exits

    # -- retire, abort, kill -------------------------------------------------------------------

    def retire(self, worker: WorkerProcess, why: str, cause: ExitCause) -> None:
        if not worker.retiring:
            worker.retire_cause = cause
            log.info("Retiring worker %d (pid: %d): %s", worker.number, worker.pid, why)
            worker.retiring = True
            self.send(worker, signal.SIGTERM)

    def stop(self, sig: int) -> None:
        """The server stops: every worker gets ``sig`` (TERM graceful, QUIT fast)."""
        self.stopping = True
        for worker in self.by_pid.values():
            self.send(worker, sig)
            worker.retiring = True

    def kill_all(self) -> list[WorkerExit]:
        """The last act of the arbiter: SIGKILL whoever is left and reap them (bounded wait)."""
        self.stopping = True  # whatever ended the loop, these exits are not restarts
        for worker in self.by_pid.values():
            worker.killed = True
            self.send(worker, signal.SIGKILL)
        exits: list[WorkerExit] = []
        deadline = time.monotonic() + KILL_WAIT
        while self.by_pid and time.monotonic() < deadline:
            exits += self.reap(block=True)
        return exits

    def check_heartbeats(self, now: float, timeout: float) -> None:
        """Abort workers whose heartbeat is older than ``timeout``; kill those that ignore it."""
        if timeout <= 0:
            return
        for worker in self.by_pid.values():
            if worker.aborted_at:
                if not worker.killed and now - worker.aborted_at > ABORT_GRACE:
                    log.error("Worker (pid: %d) did not exit after SIGABRT; killing it", worker.pid)
                    self.send(worker, signal.SIGKILL)
                    worker.killed = True
                continue
            idle = now - self.scoreboard.heartbeat(worker.slot)
            if idle > timeout:
                log.critical("WORKER TIMEOUT (pid: %d): no heartbeat for %.1fs; aborting it "
                             "(its stack follows in this log)", worker.pid, idle)
                worker.aborted_at = now
                self.send(worker, signal.SIGABRT)

    def send(self, worker: WorkerProcess, sig: int) -> None:
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def send_all(self, sig: int) -> None:
        for worker in self.by_pid.values():
            self.send(worker, sig)
