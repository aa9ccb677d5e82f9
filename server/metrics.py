"""Prometheus metrics from the scoreboard, served by the arbiter.

Why from the scoreboard: the workers already count requests, status classes and durations in
shared memory for the arbiter's own use, so a scrape costs the arbiter a walk over its workers'
slots and the workers nothing — no per-request IPC, no lock, no thread.

Counters must never go backwards, but a worker's slot dies with it. So the worker set keeps a
reaped worker's final slot in its exit record, and :meth:`Metrics.count_exits` adds those
counts to running totals; a scrape reports those totals plus the live workers' slots. A counter can only
reset when the arbiter itself is replaced (a restart, a USR2 upgrade), which Prometheus
recognises from ``process_start_time_seconds``.

Exposition: text format 0.0.4 on ``--metrics-bind ADDRESS`` (the forms of ``--bind``), path
``/metrics``, from a minimal HTTP/1.0 responder in the arbiter's loop (see
:class:`prefork.server.control.SocketService`). The endpoint has no authentication: bind it to
localhost or a unix socket. If the address cannot be bound the error is logged and binding is
retried every BIND_RETRY seconds; serving HTTP never waits for it. On a USR2 upgrade the old arbiter
lets the address go at the hand-over and the new one binds it then.

What is measured where: requests by method and status class, their durations, requests in
flight and bytes in and out come from the slots (workers/scoreboard.py, which alone knows their
layout); per-worker resident memory from /proc at scrape time; reload and upgrade outcomes
from reload.py and upgrade.py; the listeners' accept queues (``--enable-backlog-metric``) from
the kernel at scrape time. Per-worker series carry ``worker`` (its number) and ``pid``, so a
replaced worker is a new series rather than a counter that went backwards.

Why a worker exited (``prefork_worker_restarts_total{cause}``): one label per
:class:`prefork.workers.exitcodes.ExitCause`, as the worker set decided it when it reaped the
worker (server/workerset.py). Workers stopped because the arbiter is stopping are not restarts
and are not counted.

The endpoint sees the server through a read-only :class:`prefork.server.view.ServerView`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final


from prefork.config.binds import BindAddress, parse_bind
from prefork.workers.exitcodes import EXIT_CAUSES
from prefork.workers.scoreboard import DURATION_BUCKETS, METHODS, OTHER_METHOD, STATUS_CLASSES, SlotView, State

from .control import Client, SocketService
from .sockets import BindError, Listener, bind

if TYPE_CHECKING:
    from .view import ServerView
    from .exits import WorkerExit

log = logging.getLogger("prefork.error")

WORKER_STATES: Final = tuple(s.name.lower() for s in State if s is not State.FREE)
CONNECTION_STATES: Final = ("head", "body", "write", "idle", "closing")
METRICS_PATH: Final = b"/metrics"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: The request line must arrive within this many bytes (no scraper sends a long one).
MAX_REQUEST_LINE: Final = 8 * 1024
#: Seconds between attempts to bind a --metrics-bind address that was busy.
BIND_RETRY: Final = 2.0
#: A USR2 successor binds this long after the hand-over, by when the old arbiter has let go.
HANDOVER_DELAY: Final = 0.5
LISTEN_BACKLOG: Final = 64
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
#: The order histogram series are written in: methods as the scoreboard lists them.
_METHOD_ORDER: Final = {method: i for i, method in enumerate((*METHODS, OTHER_METHOD))}


@dataclass
class Totals:
    """Request counters summed over slots. ``durations``: as :attr:`SlotView.durations`,
    (method, status class) -> bucket counts, +Inf count, sum of seconds."""

    durations: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    received: int = 0
    sent: int = 0

    def add(self, view: SlotView) -> None:
        for key, values in view.durations.items():
            mine = self.durations.setdefault(key, [0] * len(values))
            for i, value in enumerate(values):
                mine[i] += value
        self.received += view.received
        self.sent += view.sent

    def copy(self) -> Totals:
        return Totals({key: list(values) for key, values in self.durations.items()}, self.received, self.sent)

    def status_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUS_CLASSES, 0)
        for (_, status_class), values in self.durations.items():
            counts[status_class] += int(sum(values[:-1]))
        return counts

    @property
    def requests(self) -> int:
        return sum(self.status_counts().values())


class Metrics:
    """The arbiter's metrics: running totals of reaped workers, the exposition, the endpoint."""

    def __init__(self, view: ServerView, readers: dict[int, Callable[[], None]]) -> None:
        self.view = view
        self.readers = readers
        self.reaped = Totals()
        self.restarts = dict.fromkeys(EXIT_CAUSES, 0)
        self.server: MetricsServer | None = None

    def open(self, defer: bool = False) -> None:
        """Start serving --metrics-bind (its syntax was checked with the configuration). An
        address that cannot be bound now is logged and retried (see the module docstring).

        ``defer``: bind on the next loop turn rather than now. A USR2 successor opens at the
        hand-over, the moment it tells the old arbiter, which lets the address go on its own
        next turn; binding at once would race it.
        """
        text = self.view.config.metrics_bind
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

    def count_exits(self, exits: list[WorkerExit]) -> None:
        """The worker set reaped these workers: keep their final counts and their causes."""
        for exit in exits:
            self.reaped.add(exit.final)
            if exit.cause is not None:
                self.restarts[exit.cause] += 1

    def totals(self) -> Totals:
        """Everything served so far: the reaped workers' counts plus the live slots."""
        totals = self.reaped.copy()
        for _, slot in self.view.workers():
            totals.add(slot)
        return totals

    def tick(self, now: float) -> None:
        """Once per loop turn: the endpoint's housekeeping."""
        if self.server is not None:
            self.server.tick(now)

    def wait(self, now: float) -> float:
        """Seconds the loop may sleep before the endpoint must (re)try its bind (inf when it
        is bound or off): a USR2 successor binds HANDOVER_DELAY after the hand-over, not at
        the next tick."""
        if self.server is None or self.server.listener is not None:
            return float("inf")
        return max(self.server.next_bind - now, 0.0)

    def close(self) -> None:
        """Let the address go (at exit, or at a USR2 hand-over, for the new arbiter)."""
        if self.server is not None:
            self.server.close()
            self.server = None

    def close_after_fork(self) -> None:
        if self.server is not None:
            self.server.close_after_fork()

    def render(self) -> str:
        """The exposition text (format 0.0.4)."""
        totals = self.totals()
        states = dict.fromkeys(WORKER_STATES, 0)
        connections = dict.fromkeys(CONNECTION_STATES, 0)
        buffered = in_flight = 0
        per_worker: list[tuple[str, int, int | None]] = []  # labels, requests, resident bytes
        for worker, slot in self.view.workers():
            states[worker.state_name(slot)] += 1
            for state in CONNECTION_STATES:
                connections[state] += getattr(slot, state)
            buffered += slot.buffered
            in_flight += slot.in_flight
            per_worker.append((f'{{worker="{worker.number}",pid="{worker.pid}"}}', slot.requests,
                               _resident_bytes(worker.pid)))
        out: list[str] = []
        _family(out, "prefork_requests_total", "counter", "Requests answered, by status class.",
                [(f'{{status_class="{cls}"}}', count) for cls, count in totals.status_counts().items()])
        _family(out, "prefork_request_duration_seconds", "histogram",
                "Time from a complete request head to the end of the application's response, by "
                "method (other: any method not listed) and status class.",
                _histogram_samples(totals.durations))
        _family(out, "prefork_requests_in_flight", "gauge", "Requests inside the application now.",
                [("", in_flight)])
        _family(out, "prefork_received_bytes_total", "counter",
                "Bytes read from clients: request heads and the bodies the workers buffered.",
                [("", totals.received)])
        _family(out, "prefork_sent_bytes_total", "counter",
                "Response body bytes sent to clients (headers not included, as the access log's %(B)s).",
                [("", totals.sent)])
        _family(out, "prefork_worker_requests_total", "counter",
                "Requests each live worker has served.", [(labels, n) for labels, n, _ in per_worker])
        _family(out, "prefork_worker_resident_memory_bytes", "gauge",
                "Resident memory of each live worker.",
                [(labels, rss) for labels, _, rss in per_worker if rss is not None])
        _family(out, "prefork_reloads_total", "counter",
                "HUP reloads, by outcome (failed: nothing started; abandoned: the new generation "
                "did not boot or was superseded).",
                [(f'{{outcome="{outcome}"}}', n) for outcome, n in self.view.reloads.items()])
        _family(out, "prefork_upgrades_total", "counter",
                "USR2 upgrades this arbiter started, by outcome.",
                [(f'{{outcome="{outcome}"}}', n) for outcome, n in self.view.upgrades.items()])
        if self.view.config.enable_backlog_metric:
            _family(out, "prefork_listen_queue_depth", "gauge",
                    "Connections waiting in a TCP listener's accept queue (Linux).",
                    [(f'{{listener="{_label(name)}"}}', depth) for name, depth in self.view.listen_queues()])
        _family(out, "prefork_workers", "gauge", "Worker processes, by state.",
                [(f'{{state="{state}"}}', count) for state, count in states.items()])
        _family(out, "prefork_worker_restarts_total", "counter",
                "Workers that exited while the server kept running, by cause.",
                [(f'{{cause="{cause.label}"}}', count) for cause, count in self.restarts.items()])
        _family(out, "prefork_worker_connections", "gauge",
                "Client connections the workers hold, by state (idle: keep-alive, between requests; "
                "closing: reading what a client still sends after an early answer).",
                [(f'{{state="{state}"}}', count) for state, count in connections.items()])
        _family(out, "prefork_worker_buffered_bytes", "gauge",
                "Bytes the workers hold in request and response buffers, memory and spool files.",
                [("", buffered)])
        _family(out, "prefork_stopping", "gauge",
                "1 once the server stops (--shutdown-delay, then the drain): health checks answer 503.",
                [("", int(self.view.stopping))])
        _family(out, "prefork_generation", "gauge", "The serving worker generation (one more per reload).",
                [("", self.view.generation)])
        _family(out, "process_start_time_seconds", "gauge",
                "Start time of the arbiter process since the Unix epoch, in seconds.",
                [("", self.view.started)])
        return "\n".join(out) + "\n"


def _family(out: list[str], name: str, kind: str, doc: str, samples: list[tuple[str, float]]) -> None:
    out.append(f"# HELP {name} {doc}")
    out.append(f"# TYPE {name} {kind}")
    out.extend(f"{name}{suffix} {_number(value)}" for suffix, value in samples)


def _histogram_samples(durations: dict[tuple[str, str], list[float]]) -> list[tuple[str, float]]:
    """Cumulative buckets, _sum and _count for each (method, status class) seen."""
    samples: list[tuple[str, float]] = []
    for (method, status_class), values in sorted(
            durations.items(), key=lambda item: (_METHOD_ORDER[item[0][0]], item[0][1])):
        labels = f'method="{method}",status_class="{status_class}"'
        cumulative = 0
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), values):
            cumulative += count
            samples.append((f'_bucket{{{labels},le="{_number(bound)}"}}', cumulative))
        samples += [(f"_sum{{{labels}}}", values[-1]), (f"_count{{{labels}}}", cumulative)]
    return samples


def _resident_bytes(pid: int) -> int | None:
    """A process's resident memory from /proc/PID/statm (no psutil in the arbiter's scrape
    path); None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def _label(value: str) -> str:
    """A label value escaped as the text format asks (a unix socket path may hold anything)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value or bucket bound the way Prometheus writes them ("+Inf", "0.005", "3")."""
    if value == float("inf"):
        return "+Inf"
    return repr(value)


class MetricsServer(SocketService):
    """A tiny HTTP/1.0 responder: ``GET /metrics`` (or HEAD) -> 200, any other target -> 404,
    an unparsable request line -> 400; one request per connection."""

    def __init__(self, metrics: Metrics, address: BindAddress) -> None:
        super().__init__(metrics.readers)
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
