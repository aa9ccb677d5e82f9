"""The Prometheus endpoint as a scraper sees it: well-formed exposition text, counters that
match what clients were served, and never go backwards when workers die or are replaced."""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests

from conftest import free_port, stop_orphan, wait_for
from httpclient import unix_request
from prefork.workers.scoreboard import DURATION_BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# -- a small, strict parser for text format 0.0.4 ----------------------------------------------------

class ExpositionError(Exception):
    pass


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^(?P<name>{_NAME})(?:\{{(?P<labels>[^}}]*)\}})? (?P<value>\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def parse_exposition(text: str) -> tuple[dict[str, str], Samples]:
    """(family -> type, (name, labels) -> value). Raises ExpositionError on anything a strict
    reader would reject: undeclared families, a TYPE after its samples, duplicate series,
    malformed labels or values, histograms whose buckets are not cumulative."""
    if not text.endswith("\n"):
        raise ExpositionError("the text must end with a newline")
    types: dict[str, str] = {}
    helps: set[str] = set()
    seen_families: set[str] = set()
    samples: Samples = {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name = line[7:].split(" ", 1)[0]
            if name in helps or not re.fullmatch(_NAME, name):
                raise ExpositionError(f"bad or repeated HELP: {line!r}")
            helps.add(name)
        elif line.startswith("# TYPE "):
            parts = line[7:].split(" ")
            if len(parts) != 2 or parts[1] not in _TYPES or parts[0] in types or parts[0] in seen_families:
                raise ExpositionError(f"bad, repeated or late TYPE: {line!r}")
            types[parts[0]] = parts[1]
        elif line.startswith("#"):
            continue
        else:
            name, labels, value = _parse_sample(line)
            family = _family(name, types)
            if family not in types:
                raise ExpositionError(f"sample of an undeclared family: {line!r}")
            seen_families.add(family)
            key = (name, labels)
            if key in samples:
                raise ExpositionError(f"duplicate series: {line!r}")
            samples[key] = value
    for family, kind in types.items():
        if kind == "histogram":
            _check_histogram(family, samples)
        elif kind == "counter" and any(v < 0 for (n, _), v in samples.items() if n == family):
            raise ExpositionError(f"negative counter {family}")
    return types, samples


def _parse_sample(line: str) -> tuple[str, tuple[tuple[str, str], ...], float]:
    match = _SAMPLE.match(line)
    if not match:
        raise ExpositionError(f"not a sample line: {line!r}")
    labels: list[tuple[str, str]] = []
    text = match["labels"] or ""
    position = 0
    while position < len(text):
        label = _LABEL.match(text, position)
        if not label:
            raise ExpositionError(f"bad labels in {line!r}")
        labels.append((label[1], label[2]))
        position = label.end()
        if position < len(text):
            if text[position] != ",":
                raise ExpositionError(f"bad label separator in {line!r}")
            position += 1
    if len({name for name, _ in labels}) != len(labels):
        raise ExpositionError(f"repeated label in {line!r}")
    raw = match["value"]
    if not re.fullmatch(r"[+-]?(Inf|NaN|[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?)", raw):
        raise ExpositionError(f"bad value in {line!r}")
    return match["name"], tuple(sorted(labels)), float(raw)


def _family(name: str, types: Mapping[str, str]) -> str:
    for suffix in _HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and types.get(base) == "histogram":
            return base
    return name


def _check_histogram(family: str, samples: Samples) -> None:
    """Each series (its labels but ``le``): cumulative buckets up to +Inf, a _sum, and a _count
    equal to the +Inf bucket. A histogram with no series yet is fine."""
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for (name, labels), value in samples.items():
        if name == family + "_bucket":
            rest = tuple(label for label in labels if label[0] != "le")
            series.setdefault(rest, []).append((float(dict(labels)["le"]), value))
    if any(name in (family + "_sum", family + "_count") and labels not in series for name, labels in samples):
        raise ExpositionError(f"{family}: no +Inf bucket")
    for labels, buckets in series.items():
        buckets.sort()
        if buckets[-1][0] != math.inf:
            raise ExpositionError(f"{family}{labels}: no +Inf bucket")
        counts = [count for _, count in buckets]
        if counts != sorted(counts):
            raise ExpositionError(f"{family}{labels}: buckets are not cumulative: {counts}")
        if samples.get((family + "_count", labels)) != counts[-1] or (family + "_sum", labels) not in samples:
            raise ExpositionError(f"{family}{labels}: _count must equal the +Inf bucket, and _sum must exist")


GOOD = """# HELP x_total Things.
# TYPE x_total counter
x_total{a="1",b="q\\"uote"} 3
# TYPE h histogram
h_bucket{le="0.5"} 1
h_bucket{le="+Inf"} 2
h_sum 0.7
h_count 2
"""

BAD = [
    ("no final newline", GOOD.rstrip("\n")),
    ("undeclared family", "y 1\n"),
    ("TYPE after samples", "# TYPE y gauge\ny 1\n# TYPE y gauge\n"),
    ("duplicate series", "# TYPE y gauge\ny{a=\"1\"} 1\ny{a=\"1\"} 2\n"),
    ("unquoted label", "# TYPE y gauge\ny{a=1} 1\n"),
    ("bad value", "# TYPE y gauge\ny 1,5\n"),
    ("negative counter", "# TYPE y counter\ny -1\n"),
    ("not cumulative", "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n"),
    ("count mismatch", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n"),
    ("no +Inf", "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n"),
]


def test_parser_accepts_well_formed_text():
    types, samples = parse_exposition(GOOD)
    assert types == {"x_total": "counter", "h": "histogram"}
    assert samples[("x_total", (("a", "1"), ("b", 'q\\"uote')))] == 3


@pytest.mark.parametrize("why, text", BAD, ids=[why for why, _ in BAD])
def test_parser_rejects(why, text):
    with pytest.raises(ExpositionError):
        parse_exposition(text)


# -- against a real server ----------------------------------------------------------------------------

def scrape(port: int) -> Samples:
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    types, samples = parse_exposition(response.text)
    types.pop("prefork_listen_queue_depth", None)  # only with --enable-backlog-metric
    assert types == {
        "prefork_requests_total": "counter", "prefork_request_duration_seconds": "histogram",
        "prefork_workers": "gauge", "prefork_worker_restarts_total": "counter",
        "prefork_generation": "gauge", "process_start_time_seconds": "gauge",
        "prefork_worker_connections": "gauge", "prefork_worker_buffered_bytes": "gauge",
        "prefork_requests_in_flight": "gauge", "prefork_received_bytes_total": "counter",
        "prefork_sent_bytes_total": "counter", "prefork_worker_requests_total": "counter",
        "prefork_worker_resident_memory_bytes": "gauge", "prefork_reloads_total": "counter",
        "prefork_upgrades_total": "counter",
        "prefork_stopping": "gauge",
    }
    return samples


def scrape_settled(port: int) -> Samples:
    """A scrape that counts the start-up probe's request: workers publish their counters once
    a second, so what a test does after this scrape is all that changes the next ones."""
    return scrape_when(port, lambda s: requests_total(s, "2xx") >= 1
                       and s[("prefork_sent_bytes_total", ())] > 0, "the start-up probe counted")


def scrape_when(port: int, condition: Callable[[Samples], bool], message: str, timeout: float = 10) -> Samples:
    """The first scrape that satisfies ``condition`` (counters settle just after a response)."""
    def attempt() -> Samples | None:
        samples = scrape(port)
        return samples if condition(samples) else None
    return wait_for(attempt, timeout, message=message)  # type: ignore[return-value]


def requests_total(samples: Samples, status_class: str) -> float:
    return samples[("prefork_requests_total", (("status_class", status_class),))]


def durations_count(samples: Samples, **labels: str) -> float:
    """Requests in the duration histogram, summed over the series matching ``labels``."""
    return sum(value for (name, series), value in samples.items()
               if name == "prefork_request_duration_seconds_count" and labels.items() <= dict(series).items())


def restarts(samples: Samples, cause: str) -> float:
    return samples[("prefork_worker_restarts_total", (("cause", cause),))]


def workers(samples: Samples, state: str) -> float:
    return samples[("prefork_workers", (("state", state),))]


@pytest.fixture
def metered(start_server):
    """``metered(*args, workers=N, app=...)``: an app (the observed one by default) with
    --metrics-bind on a free port."""
    def start(*args: str, workers: int = 2, app: str = "observed:app"):
        port = free_port()
        server = start_server(app, "--metrics-bind", f"127.0.0.1:{port}", *args, workers=workers)
        wait_for(lambda: _scrapes(port), 10, message="the metrics endpoint")
        return server, port
    return start


def _scrapes(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_scrape_counts_what_clients_were_served(metered):
    server, port = metered(workers=2)
    before = scrape_settled(port)
    for path, status in [("/", 200)] * 7 + [("/nope", 404)] * 3 + [("/error", 500)]:
        assert server.get(path).status_code == status
    want = {"2xx": requests_total(before, "2xx") + 7, "4xx": 3.0, "5xx": 1.0, "1xx": 0.0, "3xx": 0.0}
    samples = scrape_when(port, lambda s: all(requests_total(s, cls) == n for cls, n in want.items()),
                          f"counts {want}")
    assert durations_count(samples) == sum(want.values())
    assert durations_count(samples, method="GET", status_class="4xx") == 3
    get_2xx = (("method", "GET"), ("status_class", "2xx"))
    assert samples[("prefork_request_duration_seconds_bucket", (("le", "+Inf"), *get_2xx))] == want["2xx"]
    assert [float(dict(labels)["le"]) for (name, labels) in samples
            if name == "prefork_request_duration_seconds_bucket" and labels[1:] == get_2xx] == \
        [*DURATION_BUCKETS, math.inf]
    assert 0 < samples[("prefork_request_duration_seconds_sum", get_2xx)] < want["2xx"] * 1.0
    assert workers(samples, "ready") == 2 and workers(samples, "busy") == 0
    assert samples[("prefork_generation", ())] == 1
    assert samples[("prefork_stopping", ())] == 0
    started = psutil.Process(server.pid).create_time()
    assert abs(samples[("process_start_time_seconds", ())] - started) < 1


def test_counters_never_go_backwards_when_a_worker_is_killed(metered):
    server, port = metered(workers=2)
    settled = scrape_settled(port)
    served_by = {int(server.get("/pid").text) for _ in range(10)}
    before = scrape_when(port, lambda s: requests_total(s, "2xx") == requests_total(settled, "2xx") + 10,
                         "the 10 requests counted")
    victim = next(iter(served_by))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2, 10,
             message="the killed worker replaced")
    after = scrape_when(port, lambda s: restarts(s, "signal") == 1, "the restart counted")
    for key, value in before.items():
        per_worker = "pid" in dict(key[1])  # a replaced worker is a new series
        if key[0] not in ("prefork_workers", "prefork_generation", "prefork_requests_in_flight") \
                and not per_worker:
            assert after[key] >= value, key
    assert requests_total(after, "2xx") == requests_total(before, "2xx")
    assert durations_count(after) == durations_count(before)
    assert restarts(after, "crash") == 0


def test_every_restart_cause_is_counted(metered):
    server, port = metered("--max-requests", "4", "--timeout", "2", workers=1)

    def wait_cause(cause: str, count: int) -> None:
        scrape_when(port, lambda s: restarts(s, cause) == count, f"{cause} = {count}", timeout=15)
        server.wait_workers(1)

    for _ in range(4):  # the fixture's probe was request 1 of the first worker's 4
        assert server.get("/").status_code == 200
    wait_cause("max_requests", 1)
    with pytest.raises(requests.RequestException):
        server.get("/exit")
    wait_cause("crash", 1)
    os.kill(server.worker_pids().pop(), signal.SIGKILL)
    wait_cause("signal", 1)
    with pytest.raises(requests.RequestException):
        server.get("/sleep?6")  # longer than --timeout: aborted
    wait_cause("timeout", 1)
    server.signal(signal.SIGTTIN)
    server.wait_workers(2)
    server.signal(signal.SIGTTOU)
    wait_cause("scale", 1)
    server.signal(signal.SIGHUP)
    wait_cause("reload", 1)
    samples = scrape(port)
    assert {cause: restarts(samples, cause) for cause in
            ("crash", "signal", "timeout", "max_requests", "reload", "scale")} == dict.fromkeys(
        ("crash", "signal", "timeout", "max_requests", "reload", "scale"), 1)
    assert samples[("prefork_generation", ())] == 2


def test_memory_recycling_is_counted_as_its_own_cause(metered):
    server, port = metered("--max-worker-memory", "80", workers=1, app="lifecycle:app")
    for _ in range(12):  # 12 x 8 MiB: past 80 MiB
        assert server.get("/grow").status_code == 200
    samples = scrape_when(port, lambda s: restarts(s, "max_memory") == 1, "max_memory = 1", timeout=15)
    assert restarts(samples, "max_requests") == 0 and restarts(samples, "crash") == 0


ENDPOINT = [
    # (request bytes, half-close after sending, expected status line)
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", False, b"HTTP/1.0 200 OK"),
    (b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n", False, b"HTTP/1.0 200 OK"),
    (b"GET / HTTP/1.1\r\n\r\n", False, b"HTTP/1.0 404 Not Found"),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", False, b"HTTP/1.0 404 Not Found"),
    (b"hello there\r\n\r\n", False, b"HTTP/1.0 400 Bad Request"),
    (b"GET /metrics", True, b"HTTP/1.0 400 Bad Request"),
    (b"G" * 9000, False, b"HTTP/1.0 400 Bad Request"),
]


def _raw(port: int, data: bytes, half_close: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_endpoint_answers_get_metrics_and_refuses_the_rest(metered):
    server, port = metered(workers=1)
    for request, half_close, status_line in ENDPOINT:
        answer = _raw(port, request, half_close)
        assert answer.split(b"\r\n", 1)[0] == status_line, request[:40]
        head, _, body = answer.partition(b"\r\n\r\n")
        assert f"Content-Length: {len(body)}".encode() in head, request[:40]
    head = _raw(port, b"HEAD /metrics HTTP/1.1\r\n\r\n", False)
    assert head.startswith(b"HTTP/1.0 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert server.get("/").status_code == 200


def test_a_silent_client_does_not_delay_a_scrape(metered):
    server, port = metered(workers=1)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
        idle.sendall(b"GET /met")  # and nothing more
        assert requests_total(scrape_settled(port), "2xx") >= 1
        assert idle.recv(100) == b""  # dropped at its deadline


def test_metrics_on_a_unix_socket(start_server, tmp_path):
    path = tmp_path / "metrics.sock"
    server = start_server("observed:app", "--metrics-bind", f"unix:{path}", workers=1)
    wait_for(path.exists, 10, message="metrics socket")
    answer = unix_request(str(path), b"GET /metrics HTTP/1.0\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK")
    parse_exposition(body.decode())
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not Path(path).exists()


def test_busy_metrics_address_is_retried_without_stopping_the_server(start_server):
    port = free_port()
    squatter = socket.create_server(("127.0.0.1", port))
    try:
        server = start_server("observed:app", "--metrics-bind", f"127.0.0.1:{port}", workers=1)
        server.wait_log("--metrics-bind: cannot bind")
        assert server.get("/").status_code == 200
    finally:
        squatter.close()
    wait_for(lambda: _scrapes(port), 15, message="metrics once the address is free")
    server.wait_log(f"Metrics at: http://127.0.0.1:{port}/metrics")


def _sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.mark.parametrize("threads", [[], ["--threads", "2"]], ids=["loop", "pool thread"])
def test_received_bytes_count_a_body_the_app_reads_from_the_socket(metered, threads):
    """With --no-request-buffering the app's reads take the body from the socket, not the
    loop: those bytes are received too, whichever thread the app runs in."""
    server, port = metered("--no-request-buffering", *threads, workers=1)
    before = scrape_settled(port)
    body = b"x" * 300_000  # many reads: most of it arrives after the head
    assert requests.post(server.url + "/read", data=body, timeout=10).status_code == 200

    def received(s: dict) -> float:
        return s[("prefork_received_bytes_total", ())] - before[("prefork_received_bytes_total", ())]

    samples = scrape_when(port, lambda s: received(s) > len(body), "the body counted")
    assert received(samples) < len(body) + 1000  # and the head, once


def test_received_bytes_count_what_a_lingering_close_discards(metered):
    """A 2 MB upload refused with 413 after 1 KB: the worker reads and drops the rest while it
    lingers (the client then reads its 413, not a reset). Those bytes came from the client:
    the traffic metric counts them."""
    server, port = metered("--limit-request-body", "1024", workers=1)
    before = scrape_settled(port)
    size = 2_000_000
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        sock.sendall(b"x" * size)
        sock.shutdown(socket.SHUT_WR)  # the worker reads the rest, sees our end, then closes
        answer = b""
        while data := sock.recv(65536):  # (bounded by the socket's timeout)
            answer += data
    assert answer.startswith(b"HTTP/1.1 413 ")

    def received(s: dict) -> float:
        return s[("prefork_received_bytes_total", ())] - before[("prefork_received_bytes_total", ())]

    scrape_when(port, lambda s: received(s) >= size, "the discarded body counted")


def test_scrape_shows_methods_bytes_in_flight_workers_and_reloads(metered):
    server, port = metered(workers=2)
    before = scrape_settled(port)
    body = b"x" * 5000
    assert requests.post(server.url + "/", data=body, timeout=10).status_code == 200
    assert requests.delete(server.url + "/nope", timeout=10).status_code == 404
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"PROPFIND / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 200")
    samples = scrape_when(port, lambda s: durations_count(s) == durations_count(before) + 3, "3 more requests")
    assert durations_count(samples, method="POST", status_class="2xx") == 1
    assert durations_count(samples, method="DELETE", status_class="4xx") == 1
    assert durations_count(samples, method="other", status_class="2xx") == 1  # PROPFIND

    def traffic(s: dict) -> tuple[float, float]:
        return tuple(s[(name, ())] - before[(name, ())]  # type: ignore[return-value]
                     for name in ("prefork_received_bytes_total", "prefork_sent_bytes_total"))

    traffic_samples = scrape_when(port, lambda s: traffic(s)[1] == len(b"ok\n") * 2 + len(b"not found\n"),
                                  "the bytes sent")
    received, _ = traffic(traffic_samples)
    assert len(body) < received < len(body) + 1000  # three heads and the body

    pids = server.worker_pids()
    per_worker = {dict(labels)["pid"]: value for (name, labels), value in samples.items()
                  if name == "prefork_worker_requests_total"}
    assert set(per_worker) == {str(pid) for pid in pids}
    assert sum(per_worker.values()) == durations_count(samples)
    for pid in pids:
        rss = [value for (name, labels), value in samples.items()
               if name == "prefork_worker_resident_memory_bytes" and dict(labels)["pid"] == str(pid)]
        assert len(rss) == 1 and 1 << 20 < rss[0] < 1 << 31  # one live worker, a plausible size

    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(server.get, "/sleep?3")
        scrape_when(port, lambda s: s[("prefork_requests_in_flight", ())] == 1, "one request in flight")
        assert slow.result().status_code == 200
    assert scrape(port)[("prefork_requests_in_flight", ())] == 0

    server.signal(signal.SIGHUP)
    samples = scrape_when(port, lambda s: _sample(s, "prefork_reloads_total", outcome="completed") == 1,
                          "the reload counted", timeout=20)
    assert _sample(samples, "prefork_reloads_total", outcome="abandoned") == 0
    assert _sample(samples, "prefork_upgrades_total", outcome="failed") == 0


def test_listen_queue_depth_counts_connections_no_worker_took(metered):
    server, port = metered("--enable-backlog-metric", workers=1)
    depth = ("prefork_listen_queue_depth", (("listener", f"127.0.0.1:{server.port}"),))
    assert scrape(port)[depth] == 0
    (worker,) = server.worker_pids()
    os.kill(worker, signal.SIGSTOP)  # it accepts nothing while stopped; the arbiter still scrapes
    waiting = []
    try:
        for _ in range(3):
            waiting.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            waiting[-1].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # past TCP_DEFER_ACCEPT
        scrape_when(port, lambda s: s[depth] == 3, "3 connections queued")
    finally:
        os.kill(worker, signal.SIGCONT)
    for sock in waiting:
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
        sock.close()
    scrape_when(port, lambda s: s[depth] == 0, "the queue drained")


def test_usr2_leaves_the_metrics_address_unanswered_only_for_the_hand_over_delay(start_server, tmp_path):
    """The old arbiter lets the address go at the hand-over and the new one binds it
    HANDOVER_DELAY (0.5 s) later: a scraper sees that long a refusal, not a whole tick more."""
    pidfile, port = tmp_path / "app.pid", free_port()
    server = start_server("observed:app", "--pid", str(pidfile), "--metrics-bind", f"127.0.0.1:{port}",
                          workers=1)
    wait_for(lambda: _accepts(port), 10, message="the metrics endpoint")
    server.signal(signal.SIGUSR2)
    try:
        wait_for(lambda: not _accepts(port), 30, interval=0.005, message="the old arbiter to let go")
        refused_at = time.monotonic()
        wait_for(lambda: _accepts(port), 10, interval=0.005, message="the new arbiter to bind")
        gap = time.monotonic() - refused_at
        assert server.wait_exit(timeout=30) == 0
    finally:
        wait_for(pidfile.exists, 10, message="pidfile")
        new_pid = int(pidfile.read_text())
        if new_pid != server.pid:
            stop_orphan(new_pid)
    assert gap < 0.8, f"metrics refused for {gap:.2f}s"


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
