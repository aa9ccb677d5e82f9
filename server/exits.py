"""Why a worker left: one reading of a reaped worker's wait status, for everyone.

The log needs a sentence an operator can act on ("was killed by SIGKILL (perhaps out of
memory?)"), the metrics a cause to count, the arbiter a fact to decide on (did it die before it
ever became ready?). :func:`explain_exit` derives the first two from the same facts, so they can
never disagree; :class:`WorkerExit` carries all three. The causes themselves are
:class:`prefork.workers.exitcodes.ExitCause`, shared with the workers that retire themselves.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefork.workers.exitcodes import APP_LOAD_ERROR, WORKER_BOOT_ERROR, ExitCause
from prefork.workers.scoreboard import SlotView

if TYPE_CHECKING:
    from .workerset import WorkerProcess


@dataclass(frozen=True)
class WorkerExit:
    """One reaped worker and what its exit means."""

    worker: WorkerProcess
    status: int                # the wait status
    final: SlotView            # its slot as it left it: the counters metrics keep
    cause: ExitCause | None    # None: the server is stopping, so not a restart
    why: str                   # the exit in operator language, for the log
    expected: bool             # asked to go (retired, or the server is stopping)
    of_pending: bool           # from a reload's generation that was still booting

    @property
    def code(self) -> int:
        return os.waitstatus_to_exitcode(self.status)

    @property
    def failed_boot(self) -> bool:
        """It died unasked before it ever became ready."""
        return not self.expected and not self.worker.ready


def explain_exit(worker: WorkerProcess, status: int, stopping: bool) -> tuple[ExitCause | None, str]:
    """Why ``worker`` exited with wait status ``status``: the cause to count (None while the
    server stops: not a restart) and the sentence to log."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        why = describe_status(status)
        if sig == signal.SIGKILL and not worker.killed:
            why += " (perhaps out of memory?)"
        elif sig == signal.SIGABRT and worker.aborted_at:
            why = "was aborted after its heartbeat timed out"
    else:
        why = {APP_LOAD_ERROR: "could not load the application (exit code 4)",
               WORKER_BOOT_ERROR: "could not boot (exit code 3)"}.get(
            os.waitstatus_to_exitcode(status), describe_status(status))
    if stopping:
        return None, why
    if worker.aborted_at:
        return ExitCause.TIMEOUT, why
    if worker.retiring and worker.retire_cause:
        return worker.retire_cause, why  # recorded by the arbiter, or by the worker in its slot
    return (ExitCause.SIGNAL if os.WIFSIGNALED(status) else ExitCause.CRASH), why


def describe_status(status: int) -> str:
    """Any child's wait status in operator language."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"was killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"was killed by signal {sig}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"
