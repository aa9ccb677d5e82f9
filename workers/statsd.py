"""StatsD from the hot path: a request costs one list append, a loop turn at most one send.

The worker calls ``request(status, seconds)`` after each response and ``flush()`` once per
turn of its loop; the arbiter calls ``workers(count)`` and ``flush()`` on its tick. ``flush``
sums the turn's requests into one ``gunicorn.requests`` and one ``gunicorn.request.status.NNN``
counter each (a counter of 3 means what three counters of 1 mean to any statsd server), keeps
one ``gunicorn.request.duration`` timer line per request (timers cannot be summed), and sends
them all in one datagram when they fit (see prefork.config.statsd for the names and format).
"""

from __future__ import annotations

from prefork.config.settings import Config
from prefork.config.statsd import COUNTER, GAUGE, TIMER, StatsdSocket


class StatsdClient:
    """One process's metrics, batched until ``flush()``. ``request`` may be called from any
    thread (one ``list.append``, atomic); ``workers`` and ``flush`` from the loop thread."""

    def __init__(self, statsd: StatsdSocket) -> None:
        self.statsd = statsd
        self.finished: list[tuple[int, float]] = []  # (status, seconds) since the last flush
        self.worker_count: int | None = None  # what the gauge says now
        self.gauge_due = False

    @classmethod
    def from_config(cls, cfg: Config) -> StatsdClient | None:
        """A client for --statsd-host, or None when it is unset (then call nothing)."""
        statsd = StatsdSocket.from_config(cfg)
        return None if statsd is None else cls(statsd)

    @property
    def errors(self) -> int:
        """Datagrams that could not be sent."""
        return self.statsd.errors

    def request(self, status: int, duration_s: float) -> None:
        """A response went out: its status code and how long the request took, in seconds."""
        self.finished.append((status, duration_s))

    def workers(self, count: int) -> None:
        """The arbiter's worker count; the ``gunicorn.workers`` gauge is sent when it changes."""
        if count != self.worker_count:
            self.worker_count = count
            self.gauge_due = True

    def flush(self) -> None:
        """Send what was recorded since the last flush; nothing when nothing was."""
        finished, self.finished = self.finished, []
        line = self.statsd.line
        lines = []
        if self.gauge_due:
            self.gauge_due = False
            lines.append(line("gunicorn.workers", self.worker_count, GAUGE))
        if finished:
            statuses: dict[int, int] = {}
            for status, duration in finished:
                statuses[status] = statuses.get(status, 0) + 1
                lines.append(line("gunicorn.request.duration", round(duration * 1e3, 3), TIMER))
            lines.append(line("gunicorn.requests", len(finished), COUNTER))
            lines.extend(line(f"gunicorn.request.status.{status}", count, COUNTER)
                         for status, count in statuses.items())
        if lines:
            self.statsd.send(lines)

    def close(self) -> None:
        """Send what is left, then close the socket (a retiring worker's last turn)."""
        self.flush()
        self.statsd.close()
