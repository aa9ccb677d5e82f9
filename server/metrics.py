"""Prometheus metrics from the scoreboard, served by the arbiter, plus systemd's STATUS= line.

Why from the scoreboard: the workers already count requests, status classes and durations in
shared memory for the arbiter's own use, so a scrape costs the arbiter a walk over its workers'
slots and the workers nothing — no per-request IPC, no lock, no thread.

Counters must never go backwards, but a worker's slot dies with it. So when the arbiter reaps a
worker it calls :meth:`Metrics.account_reaped`, which adds that worker's final counts to
running totals; a scrape reports those totals plus the live workers' slots. A counter can only
reset when the arbiter itself is replaced (a restart, a USR2 upgrade), which Prometheus
recognises from ``process_start_time_seconds``.

Exposition: text format 0.0.4 on ``--metrics-bind ADDRESS`` (the forms of ``--bind``), path
``/metrics``, from a minimal HTTP/1.0 responder in the arbiter's loop (see
:class:`prefork.server.control.SocketService`). The endpoint has no authentication: bind it to
localhost or a unix socket. If the address cannot be bound the error is logged and binding is
retried every BIND_RETRY seconds; serving HTTP never waits for it. On a USR2 upgrade the old arbiter
lets the address go at the hand-over and the new one binds it then.

Why a worker exited (``prefork_worker_restarts_total{cause}``), from what the arbiter knows:

    timeout       aborted after its heartbeat stalled past --timeout
    reload        retired by the arbiter, from another generation (replaced by a reload, or
                  part of an abandoned one)
    scale         retired by the arbiter from the serving generation (TTOU / ``ctl workers -N``)
    max_requests  retired itself after serving --max-requests
    signal        killed by a signal the arbiter did not send (the OOM killer, an operator)
    crash         exited on its own for any other reason (including a failed boot)

Workers stopped because the arbiter is stopping are not restarts and are not counted.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final


from prefork.config.binds import BindAddress, parse_bind
from prefork.workers.scoreboard import DURATION_BUCKETS, SlotView, State

from .control import Client, SocketService, worker_state
from .sockets import BindError, Listener, bind

if TYPE_CHECKING:
    from .arbiter import Arbiter, WorkerProcess

log = logging.getLogger("prefork.error")

STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")
RESTART_CAUSES: Final = ("crash", "signal", "timeout", "max_requests", "max_memory", "reload", "scale")
WORKER_STATES: Final = tuple(s.name.lower() for s in State if s is not State.FREE)
METRICS_PATH: Final = b"/metrics"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: The request line must arrive within this many bytes (no scraper sends a long one).
MAX_REQUEST_LINE: Final = 8 * 1024
#: Seconds between attempts to bind a --metrics-bind address that was busy.
BIND_RETRY: Final = 2.0
#: A USR2 successor binds this long after the hand-over, by when the old arbiter has let go.
HANDOVER_DELAY: Final = 0.5
#: systemd's STATUS= line is refreshed at most this often.
STATUS_INTERVAL: Final = 5.0
LISTEN_BACKLOG: Final = 64


@dataclass
class Totals:
    """Request counters summed over slots."""

    status_counts: list[int] = field(default_factory=lambda: [0] * len(STATUS_CLASSES))
    duration_sum: float = 0.0
    duration_hist: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))

    def add(self, view: SlotView) -> None:
        for i, count in enumerate(view.status_counts):
            self.status_counts[i] += count
        self.duration_sum += view.duration_sum
        for i, count in enumerate(view.duration_hist):
            self.duration_hist[i] += count

    def copy(self) -> Totals:
        return Totals(list(self.status_counts), self.duration_sum, list(self.duration_hist))

    @property
    def requests(self) -> int:
        return sum(self.status_counts)


def exit_cause(arbiter: Arbiter, worker: WorkerProcess, status: int) -> str | None:
    """Why ``worker`` exited with wait status ``status``, as a RESTART_CAUSES label; None when
    the arbiter is stopping (see the module docstring)."""
    if arbiter.stopping:
        return None
    if worker.aborted_at:
        return "timeout"
    if worker.retiring and worker.retire_cause:
        return worker.retire_cause  # recorded by the arbiter, or by the worker in its slot
    return "signal" if os.WIFSIGNALED(status) else "crash"


class Metrics:
    """The arbiter's metrics: running totals of reaped workers, the exposition, the endpoint."""

    def __init__(self, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self.reaped = Totals()
        self.restarts = dict.fromkeys(RESTART_CAUSES, 0)
        self.server: MetricsServer | None = None
        self.start_time = arbiter.started
        self.next_status = 0.0

    def open(self, defer: bool = False) -> None:
        """Start serving --metrics-bind (its syntax was checked with the configuration). An
        address that cannot be bound now is logged and retried (see the module docstring).

        ``defer``: bind on the next loop turn rather than now. A USR2 successor opens at the
        hand-over, the moment it tells the old arbiter, which lets the address go on its own
        next turn; binding at once would race it.
        """
        text = self.arbiter.cfg.metrics_bind
        if not text or self.server is not None:
            return
        address = parse_bind(text, "--metrics-bind")
        if address.kind == "fd":
            log.error("--metrics-bind: %r: an inherited fd cannot serve metrics; give HOST:PORT "
                      "or unix:PATH", text)
            return
        self.server = MetricsServer(self, address)
        if defer:
            self.server.next_bind = time.monotonic() + HANDOVER_DELAY
        else:
            self.server.try_bind()

    def account_reaped(self, worker: WorkerProcess, status: int) -> None:
        """The arbiter reaped ``worker`` (its slot not yet released): keep its final counts."""
        view = self.arbiter.scoreboard.view(worker.slot)
        self.reaped.add(view)
        cause = exit_cause(self.arbiter, worker, status)
        if cause is not None:
            self.restarts[cause] += 1

    def totals(self) -> Totals:
        """Everything served so far: the reaped workers' counts plus the live slots."""
        totals = self.reaped.copy()
        scoreboard = self.arbiter.scoreboard
        for worker in self.arbiter.workers.values():
            totals.add(scoreboard.view(worker.slot))
        return totals

    def tick(self, now: float) -> None:
        """Once per loop turn: the endpoint's housekeeping, and STATUS= every STATUS_INTERVAL."""
        if self.server is not None:
            if self.arbiter.handed_over:  # USR2: free the address for the new arbiter now
                self.server.close()
                self.server = None
            else:
                self.server.tick(now)
        notifier = self.arbiter.notifier
        if notifier.enabled and self.arbiter.booted and now >= self.next_status:  # READY=1 says it first
            self.next_status = now + STATUS_INTERVAL
            notifier.status(f"{self.arbiter.status_line()}, {self.totals().requests} requests served")

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def close_after_fork(self) -> None:
        if self.server is not None:
            self.server.close_after_fork()

    def render(self) -> str:
        """The exposition text (format 0.0.4)."""
        arbiter = self.arbiter
        totals = self.totals()
        states = dict.fromkeys(WORKER_STATES, 0)
        for worker in arbiter.workers.values():
            states[worker_state(worker, arbiter.scoreboard.view(worker.slot))] += 1
        out: list[str] = []
        _family(out, "prefork_requests_total", "counter", "Requests answered, by status class.",
                [(f'{{status_class="{cls}"}}', count) for cls, count in zip(STATUS_CLASSES, totals.status_counts)])
        cumulative = 0
        buckets = []
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), totals.duration_hist):
            cumulative += count
            buckets.append((f'_bucket{{le="{_number(bound)}"}}', cumulative))
        _family(out, "prefork_request_duration_seconds", "histogram",
                "Time from a complete request head to the end of the response.",
                [*buckets, ("_sum", totals.duration_sum), ("_count", cumulative)])
        _family(out, "prefork_workers", "gauge", "Worker processes, by state.",
                [(f'{{state="{state}"}}', count) for state, count in states.items()])
        _family(out, "prefork_worker_restarts_total", "counter",
                "Workers that exited while the server kept running, by cause.",
                [(f'{{cause="{cause}"}}', count) for cause, count in self.restarts.items()])
        _family(out, "prefork_generation", "gauge", "The serving worker generation (one more per reload).",
                [("", arbiter.generation)])
        _family(out, "process_start_time_seconds", "gauge",
                "Start time of the arbiter process since the Unix epoch, in seconds.",
                [("", self.start_time)])
        return "\n".join(out) + "\n"


def _family(out: list[str], name: str, kind: str, doc: str, samples: list[tuple[str, float]]) -> None:
    out.append(f"# HELP {name} {doc}")
    out.append(f"# TYPE {name} {kind}")
    out.extend(f"{name}{suffix} {_number(value)}" for suffix, value in samples)


def _number(value: float) -> str:
    """A sample value or bucket bound the way Prometheus writes them ("+Inf", "0.005", "3")."""
    if value == float("inf"):
        return "+Inf"
    return repr(value)


class MetricsServer(SocketService):
    """A tiny HTTP/1.0 responder: ``GET /metrics`` (or HEAD) -> 200, any other target -> 404,
    an unparsable request line -> 400; one request per connection."""

    def __init__(self, metrics: Metrics, address: BindAddress) -> None:
        super().__init__(metrics.arbiter.readers)
        self.metrics = metrics
        self.address = address
        self.listener: Listener | None = None
        self.next_bind = 0.0
        self.last_error = ""

    def try_bind(self) -> None:
        try:
            listener = bind(self.address, LISTEN_BACKLOG)
        except BindError as exc:
            if str(exc) != self.last_error:
                log.error("--metrics-bind: %s; retrying every %.0fs", exc, BIND_RETRY)
                self.last_error = str(exc)
            self.next_bind = time.monotonic() + BIND_RETRY
            return
        self.listener = listener
        self.serve(listener.sock)
        log.info("Metrics at: %s%s", listener.url(), METRICS_PATH.decode() if listener.url().startswith("http") else "")

    def tick(self, now: float) -> None:
        if self.listener is None and now >= self.next_bind:
            self.try_bind()
        super().tick(now)

    def close(self) -> None:
        super().close()  # closes the socket
        if self.listener is not None:
            self.listener.close(unlink=True)
            self.listener = None

    def received(self, client: Client) -> None:
        end = client.buf.find(b"\n")
        if end < 0:
            if len(client.buf) > MAX_REQUEST_LINE:
                self.reply(client, _response(400, "Bad Request", b"request line too long\n"), close=True)
            elif client.eof and client.buf:
                self.reply(client, _response(400, "Bad Request", b"incomplete request line\n"), close=True)
            return
        parts = bytes(client.buf[:end]).rstrip(b"\r").split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self.reply(client, _response(400, "Bad Request", b"expected: GET /metrics HTTP/1.1\n"), close=True)
            return
        method, target, _ = parts
        if method in (b"GET", b"HEAD") and target.split(b"?", 1)[0] == METRICS_PATH:
            body = self.metrics.render().encode()
            self.reply(client, _response(200, "OK", body, CONTENT_TYPE, head=method == b"HEAD"), close=True)
        else:
            self.reply(client, _response(404, "Not Found", b"metrics are at /metrics\n"), close=True)


def _response(code: int, reason: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
              head: bool = False) -> bytes:
    header = (f"HTTP/1.0 {code} {reason}\r\nContent-Type: {content_type}\r\n"
              f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return header if head else header + body
