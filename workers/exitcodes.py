"""Exit codes a worker uses to tell the arbiter *why* it stopped.

They live on the workers' side because the worker chooses them; the arbiter imports them to turn
a wait status into a decision: respawn (crash), back off (boot failure after a good start), or
halt (the app cannot even be imported at start-up, so respawning would only fork-loop).
Values follow gunicorn's, so operators' scripts that read them keep working.
"""

from typing import Final

WORKER_OK: Final = 0
WORKER_BOOT_ERROR: Final = 3   # the worker could not set itself up (e.g. privilege drop failed)
APP_LOAD_ERROR: Final = 4      # the application could not be imported or called into existence

BOOT_FAILURES: Final = frozenset({WORKER_BOOT_ERROR, APP_LOAD_ERROR})
