"""``--shutdown-delay``: on TERM, say "stopping" at once but keep serving for a while.

Why: a load balancer hears of a stop later than the server. Kubernetes sends TERM and removes
the pod from the Service endpoints *at the same time, asynchronously*; kube-proxy, the ingress
and other nodes catch up over the next second or more, and until then they send new
connections here. A server that stops accepting at TERM turns those into 502s (gunicorn users
add a ``preStop: sleep``). So the first TERM only *announces* the stop — sd_notify
``STOPPING=1``, the health path's 503 (workers/health.py, through the scoreboard),
``prefork status`` / ``--check`` and the metrics — while the workers go on accepting; when the
delay is over the arbiter runs the usual graceful stop.

    first TERM           announce; serve until the delay ends        (postpone -> True)
    the delay ends       the graceful stop starts                     (due -> True, once)
    TERM during it       skip the rest: the graceful stop starts now  (postpone -> False)
    INT / QUIT           the fast stop, as always (the arbiter does not ask us)

Without a delay TERM still announces the stop, so the health path says 503 during the drain.
"""

from __future__ import annotations

import enum
import logging

from prefork.workers.scoreboard import Scoreboard

from .notify import Notifier

log = logging.getLogger("prefork.error")


class Phase(enum.Enum):
    SERVING = "serving"
    DELAYING = "delaying"  # stop announced, workers still accept
    STOPPING = "stopping"  # the graceful stop runs (or ran)


class ShutdownDelay:
    """Where a TERM-initiated stop is; see the module docstring for the moves."""

    def __init__(self, scoreboard: Scoreboard, notifier: Notifier) -> None:
        self.scoreboard = scoreboard
        self.notifier = notifier
        self.phase = Phase.SERVING
        self.until = 0.0  # monotonic end of the delay, while DELAYING

    def postpone(self, delay: float, now: float) -> bool:
        """A TERM arrived. True: keep serving until ``due``; False: stop gracefully now."""
        self.scoreboard.announce_stopping()
        if self.phase is Phase.SERVING and delay > 0:
            self.phase = Phase.DELAYING
            self.until = now + delay
            self.notifier.stopping()
            log.info("Handling signal: TERM: health checks fail from now; serving %gs more "
                     "(--shutdown-delay) before the graceful stop", delay)
            return True
        if self.phase is Phase.DELAYING:
            log.info("Handling signal: TERM again: skipping the rest of --shutdown-delay")
        self.phase = Phase.STOPPING
        return False

    def due(self, now: float) -> bool:
        """True once, when the delay has run out: time for the graceful stop (the arbiter
        logs it as it starts it)."""
        if self.phase is not Phase.DELAYING or now < self.until:
            return False
        self.phase = Phase.STOPPING
        return True

    def wait(self, now: float) -> float:
        """Seconds the loop may sleep before ``due`` can turn true (inf when no delay runs)."""
        return max(self.until - now, 0.0) if self.phase is Phase.DELAYING else float("inf")
