"""Why a worker stops: the exit codes it chooses, and the one list of causes everyone names.

The codes live on the workers' side because the worker chooses them; the arbiter imports them to
turn a wait status into a decision: respawn (crash), back off (boot failure after a good start),
or halt (the app cannot even be imported at start-up, so respawning would only fork-loop).
Values follow gunicorn's, so operators' scripts that read them keep working.

:class:`ExitCause` is the single enumeration of why a worker left while the server kept
running. A worker that retires itself stores its cause in its scoreboard slot; the arbiter
adds the causes only it can know (a reload, a scale-down, a heartbeat timeout, a signal it did
not send, a crash). The log, ``prefork status`` and the metrics label
(``prefork_worker_restarts_total{cause}``) all spell a cause as :attr:`ExitCause.label`.
"""

import enum
from typing import Final

WORKER_OK: Final = 0
WORKER_BOOT_ERROR: Final = 3   # the worker could not set itself up (e.g. privilege drop failed)
APP_LOAD_ERROR: Final = 4      # the application could not be imported or called into existence

BOOT_FAILURES: Final = frozenset({WORKER_BOOT_ERROR, APP_LOAD_ERROR})


class ExitCause(enum.IntEnum):
    """Why a worker exited or is retiring. The value is what a scoreboard slot stores; NONE (0)
    is a fresh slot's: the worker has not retired itself."""

    NONE = 0
    CRASH = 1         # exited on its own for any other reason (including a failed boot)
    SIGNAL = 2        # killed by a signal the arbiter did not send (the OOM killer, an operator)
    TIMEOUT = 3       # aborted after its heartbeat stalled past --timeout
    MAX_REQUESTS = 4  # retired itself after serving --max-requests
    MAX_MEMORY = 5    # retired itself above --max-worker-memory
    RELOAD = 6        # retired by the arbiter: replaced by a reload, or part of an abandoned one
    SCALE = 7         # retired by the arbiter from the serving generation (TTOU, `ctl workers -N`)

    @property
    def label(self) -> str:
        """The cause as the log, ``prefork status`` and the metrics label spell it."""
        return self.name.lower()


#: Every real cause, in the order the metrics list them.
EXIT_CAUSES: Final = tuple(cause for cause in ExitCause if cause is not ExitCause.NONE)
