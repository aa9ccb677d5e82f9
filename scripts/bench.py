#!/usr/bin/env python3
"""Benchmark prefork against gunicorn, uWSGI, granian, waitress and bjoern: the one place its speed is judged.

    python scripts/bench.py                      # full run (about 20 minutes)
    python scripts/bench.py --quick              # 1 s per run, 1 round: a smoke run
    python scripts/bench.py --servers prefork,gunicorn --cases hello,io --duration 3
    python scripts/bench.py --baseline main~1 --servers prefork --cases hello,hello-close
    python scripts/bench.py --chart docs/bench.png

The script sets up what it needs and then re-executes itself inside that setup, so every server
runs under the same interpreter: `wrk` and `ss` from apt (when missing), and a private virtualenv
(`scripts/.bench-venv/`) holding the peers and prefork itself, reinstalled from this checkout on
every run so the numbers belong to the tree being measured.

Method. Runs are interleaved (prefork, gunicorn, uwsgi, ... then again, the order rotating each
round) so that noise from other work on the machine is spread over every server, not dumped on
one. Every run gets a fresh server process tree on a free 127.0.0.1 port, serving the same app
file (`scripts/bench_apps/`): readiness poll, 1 s wrk warm-up, the measured wrk run, then TERM
(KILL after a bounded grace) and a check that the whole tree is gone. Per run we keep req/s,
p50/p99 latency, wrk's error counts, the server tree's CPU seconds, peak RSS (psutil,
100 ms samples; PSS, which costs the kernel a page-table walk, once a second) and its PSS once the load stops, and fairness: responses per connection (min/median/max), from the bytes each of wrk's
connections received (the kernel's count, read with `ss -ti` every 0.5 s, divided by the response
size) with connections that never got an answer counted as 0.
Per case the table shows medians over rounds with their min-max, PSS once the load has stopped,
and prefork's req/s ratio to each peer: the median of the per-round ratios (each round's prefork
run against the same round's peer run) with their min-max. Quote numbers from 3 rounds or more
(the default); with fewer the spread says nothing.

Baselines. `--baseline REV` (repeatable, or comma-separated) adds a row `prefork@SHORTSHA` for each
git revision: its tree is taken with `git archive` and installed with `pip --target` into its own
directory under the venv (kept per commit, so only the first run builds it), which the server
finds first on PYTHONPATH; the current checkout stays the row `prefork`. Baselines are interleaved
like any server, and the ratio line gives prefork / prefork@REV: how a change to the hot path
compares with the build before it, on the same machine in the same minutes.

hello-c1000 is hello with wrk -c1000: throughput and p99 when most connections wait their turn.
Cases that wrk cannot drive:
  hello-unix    Connection: close hello over a unix socket (prefork, gunicorn gthread, uWSGI):
                a Python load generator in forked processes, each with a selector loop keeping
                its share of the connections in flight. It shares the cores with the server, as
                wrk does, and may be the ceiling: req/CPU-s compares the servers' own cost.
  slow-clients  (prefork, granian, gunicorn gthread) 40 clients ask for an 8 MiB download and do
                not read it, 40 send the head and 100 KiB of a 1 MiB upload and stall; then 100
                ordinary GET / on fresh connections (4 at a time, 2 s timeout each): how many are
                answered and how fast. Then every download is read whole and every upload
                finished, and each checked (length and sha256). Bars: 100/100 answered, p99 <=
                250 ms, every transfer correct, peak RSS <= 400 MiB, judged on the worst round.

What each server gets (2 workers where the server has workers; same app file for all):
  prefork   -w 2                                   I/O case: --threads 4
  gunicorn  sync worker, -w 2                      I/O, hello-unix, slow-clients: -k gthread --threads 4
            (the sync worker closes every connection after one response: gunicorn's design)
  uwsgi     --http-socket --add-header 'Connection: close' --master --processes 2 --listen 2048
            --die-on-term --need-app --disable-logging      I/O case: --threads 4
            (--http-socket closes every connection; --http11-socket keeps them alive, but each
            worker then serves one connection until the client leaves: 30 of 32 starve)
  granian   --interface wsgi --workers 2             I/O case: --blocking-threads 4
            (its default runs the app on up to 256 threads per worker, started on demand;
            that measured faster than --blocking-threads 1 on hello, so it keeps it)
  waitress  one process, --threads 4 in every case (it has no multi-process mode)
  bjoern    one process, one thread: a C event loop and C parser (scripts/bench_apps/bjoern_serve.py),
            the yardstick for compiled code; it builds against libev (apt: libev-dev). Not in the
            thread-pool I/O case (it cannot run two requests at once) nor on unix sockets here.

Only the standard library is imported at module level: the script has to start on a bare
interpreter to build its own venv. psutil and matplotlib are imported where they are used, which
is always after the re-exec into the venv (or inside the test suite, which has psutil).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import dataclasses
import datetime
import enum
import functools
import hashlib
import http.client
import importlib.util
import importlib.metadata
import io
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
APPS_DIR = SCRIPTS_DIR / "bench_apps"
REPORT_LUA = APPS_DIR / "report.lua"
VENV_DIR = SCRIPTS_DIR / ".bench-venv"
BASELINES_DIR = VENV_DIR / "baselines"  # one --target install per baseline commit, kept
BASELINE_BUILT_MARKER = ".built"
RESULTS_DIR = SCRIPTS_DIR / "results"
CHART_NAME = "bench.png"

# What the venv holds besides prefork. psutil measures the servers, matplotlib draws the chart.
PEER_PACKAGES = ("gunicorn", "uwsgi", "granian", "waitress", "bjoern", "flask", "matplotlib", "psutil")
PEERS_MARKER = ".peers-installed"
DEBIAN_TOOLS = {"wrk": "wrk", "ss": "iproute2"}  # command -> Debian package
#: Files the peers build against (bjoern compiles against libev) -> Debian package.
DEBIAN_BUILD_FILES = {"/usr/include/ev.h": "libev-dev"}
VERSIONED_DISTRIBUTIONS = ("prefork", "gunicorn", "uWSGI", "granian", "waitress", "bjoern", "flask", "psutil", "matplotlib")
INSTALL_TIMEOUT_S = 1800.0  # uWSGI compiles from source: minutes on 2 cores

REFERENCE_SERVER = "prefork"
HOST = "127.0.0.1"
WORKERS = 2
IO_THREADS = 4
WAITRESS_THREADS = 4
CONNECTIONS = 32
IO_CONNECTIONS = 64
MANY_CONNECTIONS = 1000
WRK_THREADS = 1
REQUEST_TIMEOUT_S = 2  # wrk's --timeout, and the same for our own load generators
WRK_TIMEOUT = f"{REQUEST_TIMEOUT_S}s"
WRK_SLACK_S = 20.0  # on top of the run's duration before we give up on a wrk process
WARMUP_S = 1  # wrk takes whole seconds
DEFAULT_DURATION_S = 5
DEFAULT_ROUNDS = 3
MIN_ROUNDS_FOR_CLAIMS = 3  # fewer, and the min-max spread is one or two points
QUICK_DURATION_S = 1
QUICK_ROUNDS = 1

READY_TIMEOUT_S = 15.0
READY_POLL_S = 0.05
READY_REQUEST_TIMEOUT_S = 1.0
STOP_GRACE_S = 10.0  # TERM, then KILL: gunicorn's graceful stop alone may take its 30 s
KILL_WAIT_S = 5.0
GONE_POLL_S = 0.02
SAMPLE_INTERVAL_S = 0.1
PSS_EVERY = 10  # PSS in every 10th sample (once a second): see TreeSampler
SS_INTERVAL_S = 0.5  # one `ss` call costs a few ms of CPU: sampled less often than the process tree
SS_TIMEOUT_S = 5.0
IDLE_SETTLE_S = 1.0
LOG_TAIL_CHARS = 2000
MIB = 1024 * 1024
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
UNIX_LOAD_PROCESSES = 2  # one Python process cannot keep up with a server that has 2 workers
UNIX_LOAD_SELECT_S = 0.05
FD_HEADROOM = 256  # descriptors on top of the client connections a run opens
WRK_JSON_MARKER = "BENCH_JSON "


# --------------------------------------------------------------------------------------------
# Cases and servers
# --------------------------------------------------------------------------------------------


class Load(str, enum.Enum):
    """What drives a case (a str, so the JSON output shows the name)."""

    WRK = "wrk"  # wrk on TCP
    UNIX_CLOSE = "unix-close"  # our load generator, Connection: close over a unix socket
    SLOW_CLIENTS = "slow-clients"  # the slow-clients scenario, judged against its bars


@dataclasses.dataclass(frozen=True)
class Case:
    """One workload: which app callable, what drives it, and what the servers get for it."""

    name: str
    title: str
    app: str  # "module:callable", module file in APPS_DIR
    connections: int = CONNECTIONS
    wrk_headers: tuple[str, ...] = ()
    post_bytes: int | None = None
    threaded: bool = False  # servers get their thread options (the I/O-bound case)
    keepalive: bool = True  # False: one request per connection, so per-connection fairness means nothing
    load: Load = Load.WRK
    gthread: bool = False  # gunicorn runs its gthread worker: the sync one cannot do what the case asks
    servers: tuple[str, ...] | None = None  # the server kinds that can run it; None: all


CASES: tuple[Case, ...] = (
    Case("hello", "hello world, keep-alive", "wsgi_app:hello"),
    Case("hello-close", "hello world, Connection: close", "wsgi_app:hello", wrk_headers=("Connection: close",), keepalive=False),
    Case(
        "hello-unix", "hello world, Connection: close, unix socket", "wsgi_app:hello", keepalive=False,
        load=Load.UNIX_CLOSE, gthread=True, servers=("prefork", "gunicorn", "uwsgi"),
    ),
    Case("hello-c1000", "hello world, keep-alive, 1000 connections", "wsgi_app:hello", connections=MANY_CONNECTIONS),
    Case("json16k", "16 KiB JSON, encoded per request", "wsgi_app:json16k"),
    Case("big1m", "1 MiB response", "wsgi_app:big1m"),
    Case("post4k", "4 KiB POST echo", "wsgi_app:echo", post_bytes=4096),
    Case("flask", "Flask hello world", "flask_app:app"),
    Case("io", "I/O-bound app (10 ms sleep), threads", "wsgi_app:io", connections=IO_CONNECTIONS, threaded=True),
    Case(
        "slow-clients", "40 unread 8 MiB downloads, 40 stalled 1 MiB uploads, then 100 ordinary requests",
        "transfer_app:app", keepalive=False, load=Load.SLOW_CLIENTS, gthread=True, servers=("prefork", "granian", "gunicorn"),
    ),
)
CASES_BY_NAME = {case.name: case for case in CASES}
IDLE_MEMORY_CASE = CASES_BY_NAME["hello"]

# Where a server listens: a TCP port on HOST, or a unix socket path.
Bind = int | Path


def _tcp_port(bind: Bind) -> int:
    """For the servers no case runs on a unix socket: one reaching them means a Case lists them wrongly."""
    if isinstance(bind, Path):
        raise ValueError(f"this server is not run on unix sockets here: {bind}")
    return bind


def _bind_flag_value(bind: Bind) -> str:
    """prefork's and gunicorn's -b syntax."""
    return f"unix:{bind}" if isinstance(bind, Path) else f"{HOST}:{bind}"


def _prefork_command(bin_dir: Path, case: Case, bind: Bind) -> list[str]:
    threads = ["--threads", str(IO_THREADS)] if case.threaded else []
    return [str(bin_dir / "prefork"), "-w", str(WORKERS), "-b", _bind_flag_value(bind), *threads, case.app]


def _gunicorn_command(bin_dir: Path, case: Case, bind: Bind) -> list[str]:
    worker = ["-k", "gthread", "--threads", str(IO_THREADS)] if case.threaded or case.gthread else []
    return [str(bin_dir / "gunicorn"), "-w", str(WORKERS), "-b", _bind_flag_value(bind), "--log-level", "warning", *worker, case.app]


def _uwsgi_command(bin_dir: Path, case: Case, bind: Bind) -> list[str]:
    module, callable_name = case.app.split(":")
    threads = ["--threads", str(IO_THREADS)] if case.threaded else []
    return [
        str(bin_dir / "uwsgi"),
        # --http-socket closes every connection (as gunicorn's sync worker does), but without
        # saying so: the header makes the close explicit, else wrk counts each one as a read error.
        # --http11-socket keeps connections alive but a worker then serves one connection until
        # the client leaves: measured, 2 of wrk's 32 connections got every answer, 30 got none.
        # A bare path (no colon) is a unix socket.
        "--http-socket", str(bind) if isinstance(bind, Path) else f"{HOST}:{bind}", "--add-header", "Connection: close",
        "--master", "--processes", str(WORKERS),
        "--wsgi-file", str(APPS_DIR / f"{module}.py"), "--callable", callable_name,
        "--listen", "2048",  # gunicorn's and prefork's backlog; uWSGI's default is 100
        "--die-on-term",  # uWSGI 2.0 reloads on TERM otherwise
        "--need-app", "--disable-logging",
        *threads,
    ]


def _granian_command(bin_dir: Path, case: Case, bind: Bind) -> list[str]:
    # Without the option granian starts up to backlog/workers/2 (256) app threads per worker on
    # demand; that measured faster than 1 thread on hello, so the CPU-bound cases keep it.
    threads = ["--blocking-threads", str(IO_THREADS)] if case.threaded else []
    return [
        str(bin_dir / "granian"), "--interface", "wsgi", "--workers", str(WORKERS), *threads,
        "--host", HOST, "--port", str(_tcp_port(bind)), "--log-level", "warning", case.app,
    ]


def _waitress_command(bin_dir: Path, case: Case, bind: Bind) -> list[str]:
    return [str(bin_dir / "waitress-serve"), f"--listen={HOST}:{_tcp_port(bind)}", f"--threads={WAITRESS_THREADS}", case.app]


def _bjoern_command(bin_dir: Path, case: Case, bind: Bind) -> list[str]:
    return [str(bin_dir / "python"), str(APPS_DIR / "bjoern_serve.py"), HOST, str(_tcp_port(bind)), case.app]


#: Servers that run one request at a time: the thread-pool (I/O) case would only measure that.
SINGLE_THREADED = frozenset({"bjoern"})

CommandBuilder = Callable[[Path, Case, Bind], list[str]]
SERVERS: dict[str, CommandBuilder] = {
    "prefork": _prefork_command,
    "gunicorn": _gunicorn_command,
    "uwsgi": _uwsgi_command,
    "granian": _granian_command,
    "waitress": _waitress_command,
    "bjoern": _bjoern_command,
}
SERVER_NOTES = {
    "prefork": f"-w {WORKERS}; I/O case: --threads {IO_THREADS}",
    "gunicorn": f"sync worker -w {WORKERS} (closes each connection after one response); I/O, hello-unix and slow-clients: -k gthread --threads {IO_THREADS}",
    "uwsgi": f"--http-socket (closes each connection; --http11-socket starves all but {WORKERS} connections) --master --processes {WORKERS} --listen 2048; I/O case: --threads {IO_THREADS}",
    "granian": f"--interface wsgi --workers {WORKERS} (default app threads: up to 256 per worker); I/O case: --blocking-threads {IO_THREADS}",
    "waitress": f"single process, --threads {WAITRESS_THREADS} in every case (no multi-process mode)",
    "bjoern": "single process, single thread (C event loop and parser; no workers, no threads)",
}


@dataclasses.dataclass(frozen=True)
class Build:
    """Where a server's programs come from: the bench venv, or a baseline's own --target directory."""

    bin_dir: Path
    python_path: tuple[Path, ...] = ()  # ahead of the apps on PYTHONPATH: a baseline's prefork wins over the venv's


@dataclasses.dataclass(frozen=True)
class Server:
    """One row of the tables: a server kind (a key of SERVERS) run from one build."""

    name: str  # "prefork", "gunicorn", "prefork@e1891ea"
    kind: str
    build: Build
    revision: str | None = None  # full sha, for baselines

    def command(self, case: Case, bind: Bind) -> list[str]:
        return SERVERS[self.kind](self.build.bin_dir, case, bind)

    def runs(self, case: Case) -> bool:
        if case.threaded and self.kind in SINGLE_THREADED:
            return False
        return case.servers is None or self.kind in case.servers

    def note(self) -> str:
        built = f"; built from {self.revision}" if self.revision else ""
        return SERVER_NOTES[self.kind] + built


def server_label(server: str, case: Case) -> str:
    """The name shown in tables: says when a server runs a different worker type for this case."""
    if server == "gunicorn" and (case.threaded or case.gthread):
        return "gunicorn (gthread)"
    return server


# --------------------------------------------------------------------------------------------
# Pure functions: wrk and ss output -> numbers, fairness, medians, ratios, tables
# --------------------------------------------------------------------------------------------


class WrkOutputError(Exception):
    """wrk ran but did not print the report line our Lua script writes."""


@dataclasses.dataclass
class Fairness:
    """Responses per connection over one run; connections that got no answer count as 0."""

    min: int
    median: float
    max: int
    connections: int  # distinct client connections seen (more than wrk's: the server closed some)
    unseen_responses: bool = False  # most of wrk's responses came on connections ss never saw open


@dataclasses.dataclass
class WrkResult:
    """What one load run measured: wrk's report, or our unix load generator's in the same terms."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]  # connect, read, write, status (non-2xx/3xx), timeout
    bytes_per_response: float  # headers and body, as wrk read them

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


def parse_wrk_report(stdout: str) -> dict:
    """Finds the JSON line that report.lua's done() printed among wrk's own text."""
    for line in stdout.splitlines():
        if line.startswith(WRK_JSON_MARKER):
            return json.loads(line[len(WRK_JSON_MARKER):])
    raise WrkOutputError(f"no {WRK_JSON_MARKER.strip()} line in wrk output: {stdout[-LOG_TAIL_CHARS:]!r}")


def parse_ss_received(stdout: str) -> dict[int, int]:
    """Client port -> bytes_received, from `ss -tinH` output (a socket line, then its info line).

    A socket that has received nothing has no bytes_received field: it counts as 0, which is the
    point — a connection the server never answered must show up, not disappear.
    """
    received: dict[int, int] = {}
    port: int | None = None
    for line in stdout.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            local_address = line.split()[-2]
            port = int(local_address.rsplit(":", 1)[1])
            received[port] = 0
            continue
        if port is None:
            continue
        for field in line.split():
            if field.startswith("bytes_received:"):
                received[port] = int(field.split(":", 1)[1])
    return received


def compute_fairness(received: dict[int, int], bytes_per_response: float, connections: int, responses: int = 0) -> Fairness | None:
    """min/median/max responses per connection, from the bytes each client connection received.

    Every response in a case has the same size, so bytes / bytes_per_response is the count of
    responses. wrk opened `connections` connections; any that ss never saw are counted as 0
    (never answered), so a starved connection shows as min 0 rather than vanishing. When the
    counts add up to less than half of wrk's `responses`, the server closed its connections
    faster than ss samples (uWSGI's --http-socket): no spread can be told from them.
    """
    if connections < 1:
        return None
    if bytes_per_response > 0:
        counts = [round(value / bytes_per_response) for value in received.values()]
    else:
        counts = [0] * len(received)
    unseen = sum(counts) < responses / 2
    counts.extend([0] * (connections - len(counts)))
    counts.sort()
    return Fairness(min=counts[0], median=statistics.median(counts), max=counts[-1], connections=len(received), unseen_responses=unseen)


def wrk_result_from_report(report: dict) -> WrkResult:
    """Turns report.lua's raw numbers (microseconds, counts) into req/s and milliseconds."""
    duration_s = report["duration_us"] / 1e6
    latency = report["latency_us"]
    return WrkResult(
        requests=report["requests"],
        duration_s=duration_s,
        rps=report["requests"] / duration_s if duration_s > 0 else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        errors=dict(report["errors"]),
        bytes_per_response=report["bytes"] / report["requests"] if report["requests"] else 0.0,
    )


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (as wrk's histogram gives): an actual value, never interpolated."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclasses.dataclass
class Usage:
    """What the server's process tree cost over the measured window."""

    cpu_s: float
    peak_rss_mib: float
    processes: int  # most processes seen in the tree at once
    peak_pss_mib: float | None = None  # None where smaps_rollup could not be read
    pss_after_mib: float | None = None  # once the load has stopped, before the server is


@dataclasses.dataclass(frozen=True)
class SlowClientsPlan:
    """The slow-clients scenario's sizes and bounds; the tests run a small one."""

    downloads: int = 40
    download_bytes: int = 8 * MIB
    uploads: int = 40
    upload_bytes: int = MIB
    upload_sent_before_stall: int = 100 * 1024
    ordinary: int = 100
    ordinary_concurrency: int = 4
    ordinary_timeout_s: float = REQUEST_TIMEOUT_S
    settle_s: float = 0.5  # after the slow clients are in, before the ordinary requests start
    ordinary_phase_max_s: float = 30.0  # requests not started by then count as unanswered
    resume_max_s: float = 60.0  # for reading every download and finishing every upload
    receive_buffer: int = 4096  # the unread downloads' SO_RCVBUF: the server must hold most of each body


SLOW_CLIENTS = SlowClientsPlan()


@dataclasses.dataclass(frozen=True)
class SlowClientsBars:
    """What a server has to do under slow clients, judged on the worst round."""

    p99_ms: float = 250.0
    peak_rss_mib: float = 400.0


SLOW_CLIENTS_BARS = SlowClientsBars()


@dataclasses.dataclass
class SlowClientsResult:
    """What the clients saw in one slow-clients run."""

    ordinary: int  # ordinary requests planned
    latencies_ms: list[float]  # of those answered (200, right body) within the timeout
    downloads: int
    downloads_ok: int  # read whole, right length and sha256
    uploads: int
    uploads_ok: int  # finished, answered with the right length and sha256
    faults: dict[str, int]  # what went wrong, by kind ("ordinary: TimeoutError", "download: wrong body")

    @property
    def answered(self) -> int:
        return len(self.latencies_ms)

    def latency_ms(self, fraction: float) -> float:
        """Over every ordinary request planned, unanswered ones as infinitely slow: a p99 that
        ignored the requests that timed out would flatter the server that dropped them."""
        if not self.ordinary:
            return math.inf
        unanswered = [math.inf] * (self.ordinary - self.answered)
        return percentile(sorted(self.latencies_ms) + unanswered, fraction)


@dataclasses.dataclass
class RunResult:
    server: str
    case: str
    round: int
    command: list[str]
    wrk: WrkResult | None = None
    usage: Usage | None = None
    fairness: Fairness | None = None  # None in the Connection: close cases
    slow: SlowClientsResult | None = None  # the slow-clients case only
    error: str | None = None
    stop_s: float | None = None
    killed: bool = False  # TERM was not enough


@dataclasses.dataclass
class Spread:
    """A median over rounds, with the lowest and highest value and how many there were."""

    median: float
    min: float
    max: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        return cls(median=statistics.median(values), min=min(values), max=max(values), count=len(values))

    def format(self, spec: str, unit: str = "") -> str:
        """`1,234 [1,100-1,300]`; a single value has no range to show."""
        text = format(self.median, spec) + unit
        if self.count > 1:
            text += f" [{self.min:{spec}}-{self.max:{spec}}]"
        return text


@dataclasses.dataclass
class Summary:
    """One server on one case, over all rounds."""

    runs: int
    failures: int
    requests: int  # over all rounds
    rps: Spread | None
    p50_ms: float | None
    p99_ms: Spread | None
    errors: int
    error_kinds: dict[str, int]  # wrk's kinds, added up over the rounds; only the non-zero ones
    cpu_s: float | None
    requests_per_cpu_s: float | None
    peak_rss_mib: float | None
    pss_after_mib: float | None
    fairness: Fairness | None
    first_error: str | None


def _median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(runs: Sequence[RunResult]) -> Summary:
    """Medians over the rounds that worked; errors add up; fairness keeps the worst ends seen."""
    ok = [run for run in runs if run.wrk is not None and run.usage is not None]
    wrks = [run.wrk for run in ok]
    usages = [run.usage for run in ok]
    fair = [run.fairness for run in ok if run.fairness is not None]
    cpu = [u.cpu_s for u in usages]
    requests = sum(w.requests for w in wrks)
    error_kinds: dict[str, int] = {}
    for wrk in wrks:
        for kind, count in wrk.errors.items():
            if count:
                error_kinds[kind] = error_kinds.get(kind, 0) + count
    return Summary(
        runs=len(runs),
        failures=len(runs) - len(ok),
        requests=requests,
        rps=Spread.of([w.rps for w in wrks]),
        p50_ms=_median_or_none([w.p50_ms for w in wrks]),
        p99_ms=Spread.of([w.p99_ms for w in wrks]),
        errors=sum(error_kinds.values()),
        error_kinds=error_kinds,
        cpu_s=_median_or_none(cpu),
        requests_per_cpu_s=requests / sum(cpu) if sum(cpu) > 0 else None,
        peak_rss_mib=_median_or_none([u.peak_rss_mib for u in usages]),
        pss_after_mib=_median_or_none([u.pss_after_mib for u in usages if u.pss_after_mib is not None]),
        fairness=Fairness(
            min=min(f.min for f in fair),
            median=statistics.median(f.median for f in fair),
            max=max(f.max for f in fair),
            connections=max(f.connections for f in fair),
            unseen_responses=any(f.unseen_responses for f in fair),
        ) if fair else None,
        first_error=next((run.error for run in runs if run.error), None),
    )


def round_ratios(reference: Sequence[RunResult], peer: Sequence[RunResult]) -> Spread | None:
    """reference's req/s over peer's, round by round: both ran in the same minutes, so a burst of
    other work on the machine hits the pair rather than one side. Rounds where either failed are
    left out."""
    reference_rps = {run.round: run.wrk.rps for run in reference if run.wrk is not None}
    return Spread.of([
        reference_rps[run.round] / run.wrk.rps
        for run in peer
        if run.wrk is not None and run.wrk.rps and reference_rps.get(run.round)
    ])


def ratios(runs_by_server: dict[str, Sequence[RunResult]], reference: str = REFERENCE_SERVER) -> dict[str, Spread | None]:
    """reference's per-round ratio to every other server; None where no round has both numbers."""
    reference_runs = runs_by_server.get(reference, [])
    return {server: round_ratios(reference_runs, runs) for server, runs in runs_by_server.items() if server != reference}


def format_ratio_line(ratio_by_peer: dict[str, Spread | None], reference: str = REFERENCE_SERVER) -> str:
    parts = [f"{reference} / {peer} = {_fmt_spread(ratio, '.2f', 'x') if ratio else 'n/a'}" for peer, ratio in ratio_by_peer.items()]
    return "   ".join(parts)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _fmt_spread(value: Spread | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else value.format(spec, unit)


def format_fairness(fairness: Fairness | None, case: Case) -> str:
    if not case.keepalive:
        return "n/a (close)"
    if fairness is None:
        return "-"
    if fairness.connections > case.connections or fairness.unseen_responses:
        # More connections than wrk keeps open, or responses on connections ss never saw: the
        # server closed them (gunicorn's sync worker and uWSGI's --http-socket close after every
        # response), and a spread over short-lived connections says nothing about whether wrk's
        # connections were all served.
        return f"n/a (server closes: {fairness.connections} conns seen)"
    return f"{fairness.min}/{fairness.median:g}/{fairness.max}"


TABLE_COLUMNS = (
    "server", "req/s [min-max]", "p50 ms", "p99 ms [min-max]", "errors", "CPU s", "req/CPU-s", "peak RSS MiB",
    "PSS after MiB", "fairness min/med/max",
)


def _render_table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return lines


def load_description(case: Case) -> str:
    if case.load is Load.UNIX_CLOSE:
        return f"{UNIX_LOAD_PROCESSES} Python client processes, {case.connections} connections in flight"
    return f"wrk -t{WRK_THREADS} -c{case.connections}"


def format_case_table(case: Case, summaries: dict[str, Summary], ratio_by_peer: dict[str, Spread | None], rounds: int, duration_s: int) -> str:
    """The per-case table: one row per server, then prefork's ratio to each peer."""
    heading = f"== {case.name}: {case.title} ({load_description(case)}, {rounds} x {duration_s} s) =="
    rows: list[tuple[str, ...]] = [TABLE_COLUMNS]
    for server, summary in summaries.items():
        label = server_label(server, case)
        if summary.rps is None:
            rows.append((label, f"failed: {summary.first_error}"[:60], *([""] * (len(TABLE_COLUMNS) - 2))))
            continue
        rows.append((
            label,
            _fmt_spread(summary.rps, ",.0f"),
            _fmt(summary.p50_ms, ".2f"),
            _fmt_spread(summary.p99_ms, ".2f"),
            str(summary.errors) + (f" +{summary.failures} failed" if summary.failures else ""),
            _fmt(summary.cpu_s, ".2f"),
            _fmt(summary.requests_per_cpu_s, ",.0f"),
            _fmt(summary.peak_rss_mib, ".1f"),
            _fmt(summary.pss_after_mib, ".1f"),
            format_fairness(summary.fairness, case),
        ))
    lines = [heading, *_render_table(rows)]
    for server, summary in summaries.items():
        if summary.errors:
            kinds = ", ".join(f"{kind} {count:,}" for kind, count in summary.error_kinds.items())
            lines.append(f"  ! {server}: {summary.errors:,} errors ({kinds}) in {summary.requests:,} requests; its req/s counts failed responses too")
    if ratio_by_peer:
        lines.append(format_ratio_line(ratio_by_peer))
    return "\n".join(lines)


def _fmt_ms(value: float, unit: str = "") -> str:
    """A latency over requests of which some may never have been answered (infinite)."""
    return "timeout" if math.isinf(value) else f"{value:.1f}{unit}"


def slow_clients_misses(runs: Sequence[RunResult], plan: SlowClientsPlan = SLOW_CLIENTS, bars: SlowClientsBars = SLOW_CLIENTS_BARS) -> list[str]:
    """The bars a server missed in any round (a failed run misses them all)."""
    if not runs or any(run.slow is None or run.usage is None for run in runs):
        return ["ran"]
    misses = []
    if any(run.slow.answered < plan.ordinary for run in runs):
        misses.append("answered")
    if any(run.slow.latency_ms(0.99) > bars.p99_ms for run in runs):
        misses.append("p99")
    if any(run.slow.downloads_ok < plan.downloads or run.slow.uploads_ok < plan.uploads for run in runs):
        misses.append("transfers")
    if any(run.usage.peak_rss_mib > bars.peak_rss_mib for run in runs):
        misses.append("RSS")
    return misses


SLOW_CLIENTS_COLUMNS = ("server", "answered", "p50 ms", "p99 ms", "downloads ok", "uploads ok", "CPU s", "peak RSS MiB", "peak PSS MiB", "bars")


def format_slow_clients_table(case: Case, runs_by_server: dict[str, Sequence[RunResult]], plan: SlowClientsPlan = SLOW_CLIENTS, bars: SlowClientsBars = SLOW_CLIENTS_BARS) -> str:
    """One row per server, each figure its worst round (the median for CPU), then what went wrong."""
    heading = f"== {case.name}: {case.title} ({len(next(iter(runs_by_server.values()), []))} rounds: each figure its worst, CPU its median) =="
    bar_line = (
        f"bars: {plan.ordinary}/{plan.ordinary} answered, p99 <= {bars.p99_ms:.0f} ms, "
        f"{plan.downloads}/{plan.downloads} downloads and {plan.uploads}/{plan.uploads} uploads correct, peak RSS <= {bars.peak_rss_mib:.0f} MiB"
    )
    rows: list[tuple[str, ...]] = [SLOW_CLIENTS_COLUMNS]
    notes: list[str] = []
    for server, runs in runs_by_server.items():
        label = server_label(server, case)
        done = [run for run in runs if run.slow is not None and run.usage is not None]
        misses = slow_clients_misses(runs, plan, bars)
        for run in runs:
            if run.error:
                notes.append(f"  ! {server} round {run.round + 1}: {run.error[:200]}")
            elif run.slow.faults:
                faults = ", ".join(f"{count} x {kind}" for kind, count in sorted(run.slow.faults.items()))
                notes.append(f"  ! {server} round {run.round + 1}: {faults}")
        if not done:
            rows.append((label, "failed", *([""] * (len(SLOW_CLIENTS_COLUMNS) - 3)), "misses all"))
            continue
        pss = [run.usage.peak_pss_mib for run in done if run.usage.peak_pss_mib is not None]
        rows.append((
            label,
            f"{min(run.slow.answered for run in done)}/{plan.ordinary}",
            _fmt_ms(max(run.slow.latency_ms(0.5) for run in done)),
            _fmt_ms(max(run.slow.latency_ms(0.99) for run in done)),
            f"{min(run.slow.downloads_ok for run in done)}/{plan.downloads}",
            f"{min(run.slow.uploads_ok for run in done)}/{plan.uploads}",
            _fmt(_median_or_none([run.usage.cpu_s for run in done]), ".2f"),
            _fmt(max(run.usage.peak_rss_mib for run in done), ".1f"),
            _fmt(max(pss) if pss else None, ".1f"),
            "meets all" if not misses else "misses " + ", ".join(misses),
        ))
    return "\n".join([heading, bar_line, *_render_table(rows), *notes])


@dataclasses.dataclass
class IdleMemory:
    processes: int
    rss_mib: float
    pss_mib: float | None  # None where /proc/PID/smaps_rollup could not be read


def format_idle_table(idle: dict[str, list[IdleMemory]]) -> str:
    rows: list[tuple[str, ...]] = [("server", "processes", "RSS MiB", "PSS MiB")]
    for server, samples in idle.items():
        if not samples:
            rows.append((server, "failed", "", ""))
            continue
        pss = [s.pss_mib for s in samples if s.pss_mib is not None]
        rows.append((
            server,
            str(max(s.processes for s in samples)),
            _fmt(statistics.median(s.rss_mib for s in samples), ".1f"),
            _fmt(_median_or_none(pss), ".1f"),
        ))
    heading = "== idle memory: whole process tree after start-up (RSS counts shared pages once per process; PSS splits them) =="
    return "\n".join([heading, *_render_table(rows)])


# --------------------------------------------------------------------------------------------
# Setup: wrk, the venv, the re-exec
# --------------------------------------------------------------------------------------------


def _run_setup_step(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    print(f"setup: {what}", flush=True)
    completed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if completed.returncode != 0:
        raise SystemExit(f"setup failed: {' '.join(argv)}\n{(completed.stdout + completed.stderr)[-LOG_TAIL_CHARS:]}")


def ensure_tools() -> None:
    """wrk drives the load, ss (iproute2) reads per-connection byte counts: both from Debian."""
    missing = [package for tool, package in DEBIAN_TOOLS.items() if not shutil.which(tool)]
    missing += [package for path, package in DEBIAN_BUILD_FILES.items() if not os.path.exists(path)]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run_setup_step(["apt-get", "update"], "apt-get update", env)
    _run_setup_step(["apt-get", "install", "-y", "--no-install-recommends", *missing], f"apt-get install {' '.join(missing)}", env)


def venv_python() -> Path:
    return VENV_DIR / "bin" / "python"


def ensure_venv() -> None:
    """Creates the venv once, installs the peers once, and prefork from this checkout every time."""
    if not venv_python().exists():
        _run_setup_step([sys.executable, "-m", "venv", str(VENV_DIR)], f"create {VENV_DIR}")
    marker = VENV_DIR / PEERS_MARKER
    wanted = "\n".join(PEER_PACKAGES)
    if not marker.exists() or marker.read_text() != wanted:
        pip = [str(venv_python()), "-m", "pip", "install", "--quiet"]
        _run_setup_step([*pip, *PEER_PACKAGES], f"pip install {' '.join(PEER_PACKAGES)} (uWSGI compiles: a few minutes)")
        marker.write_text(wanted)
    # pip always rebuilds and reinstalls a project given as a directory: no --force-reinstall needed.
    _run_setup_step([str(venv_python()), "-m", "pip", "install", "--quiet", str(REPO_ROOT)], "pip install prefork from this checkout")


def running_in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV_DIR.resolve()


def _git(*argv: str) -> str:
    """git in this checkout; a revision it does not know stops the run before any server starts."""
    completed = subprocess.run(["git", "-C", str(REPO_ROOT), *argv], capture_output=True, text=True, timeout=60)
    if completed.returncode != 0:
        raise SystemExit(f"git {' '.join(argv)} failed: {completed.stderr.strip()}")
    return completed.stdout.strip()


def baseline_server(revision: str) -> Server:
    """The row for a git revision: `prefork@SHORTSHA`, its build kept under the venv per full sha."""
    full = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    site = BASELINES_DIR / full / "site"
    return Server(name=f"prefork@{_git('rev-parse', '--short', full)}", kind="prefork", build=Build(site / "bin", (site,)), revision=full)


def ensure_baseline(server: Server) -> None:
    """Installs a baseline's tree (git archive, so nothing in the checkout changes) into its own
    --target directory, once per commit: it holds only prefork, and the venv provides the rest."""
    root = BASELINES_DIR / server.revision
    if (root / BASELINE_BUILT_MARKER).exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    source = root / "src"
    source.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", server.revision], capture_output=True, timeout=60, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(source, filter="data")
    site = server.build.python_path[0]
    _run_setup_step(
        [str(venv_python()), "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(source)],
        f"pip install {server.name} into {site}",
    )
    (root / BASELINE_BUILT_MARKER).write_text(server.revision)


def baseline_is_built(server: Server) -> bool:
    return (BASELINES_DIR / str(server.revision) / BASELINE_BUILT_MARKER).exists()


# --------------------------------------------------------------------------------------------
# Server processes: start, readiness, measuring, stopping
# --------------------------------------------------------------------------------------------


class ServerFailed(Exception):
    """The server under test did not come up: that run fails, the benchmark goes on."""


class TreeSurvived(Exception):
    """A server process outlived SIGKILL: every later number would be polluted, so the benchmark stops."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def server_env(build: Build) -> dict[str, str]:
    """Same environment for every server: the apps on sys.path (after a baseline's own build),
    the build's programs first on PATH, no inherited tuning."""
    env = {key: value for key, value in os.environ.items() if key not in ("WEB_CONCURRENCY", "PREFORK_CMD_ARGS", "GUNICORN_CMD_ARGS", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(str(path) for path in (*build.python_path, APPS_DIR))
    env["PATH"] = f"{build.bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:].strip() if path.exists() else ""


def connect(bind: Bind, timeout_s: float) -> socket.socket:
    """A client connection to the server, on TCP or its unix socket."""
    if isinstance(bind, Path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(bind))
        except OSError:
            sock.close()
            raise
        return sock
    return socket.create_connection((HOST, bind), timeout=timeout_s)


class _ReadyProbe(http.client.HTTPConnection):
    """http.client over whichever socket the server listens on."""

    def __init__(self, bind: Bind, timeout_s: float) -> None:
        super().__init__(HOST, timeout=timeout_s)
        self._bind = bind

    def connect(self) -> None:
        self.sock = connect(self._bind, self.timeout)


def wait_ready(proc: subprocess.Popen, bind: Bind, log_path: Path, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Polls GET / until the server answers; returns seconds taken. Raises if it exits or never answers."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"exited with code {proc.returncode} before answering: {_log_tail(log_path)}")
        conn = _ReadyProbe(bind, READY_REQUEST_TIMEOUT_S)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return time.monotonic() - started
        except (OSError, http.client.HTTPException):
            time.sleep(READY_POLL_S)
        finally:
            conn.close()
    raise ServerFailed(f"no answer on {bind} within {timeout_s:.0f} s: {_log_tail(log_path)}")


def process_tree(pid: int) -> list:
    """psutil.Process objects for pid and every descendant still alive."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _still_running(procs: list) -> list:
    """Those that exist and are not zombies (a zombie holds no socket, memory or CPU)."""
    import psutil

    alive = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


def _wait_gone(procs: list, timeout_s: float) -> list:
    deadline = time.monotonic() + timeout_s
    alive = _still_running(procs)
    while alive and time.monotonic() < deadline:
        time.sleep(GONE_POLL_S)
        alive = _still_running(alive)
    return alive


def become_subreaper() -> None:
    """Makes this process the reaper of its orphaned descendants (Linux PR_SET_CHILD_SUBREAPER).

    When an arbiter dies before its workers (a KILL), the workers are re-parented. On a machine
    whose PID 1 never reaps (containers), they would stay zombies for good; as subreaper we get
    them and stop_tree reaps them.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}")


def _reap(pids: Sequence[int]) -> None:
    """Collects the exit status of those pids that are (now) our children; others are not ours to wait for."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue


def _session_members(session_id: int) -> list:
    """Every process in the session the server was started in (it was started with setsid)."""
    import psutil

    members = []
    for candidate in psutil.process_iter():
        try:
            if os.getsid(candidate.pid) == session_id:
                members.append(candidate)
        except ProcessLookupError:
            continue
    return members


def stop_tree(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> tuple[float, bool]:
    """TERM the server, KILL what is left after `grace_s`, and make sure the whole tree is gone.

    The tree is captured before TERM: once the arbiter exits, its workers are re-parented and can
    no longer be found from it. Anything else still in the server's session after the grace (a
    process forked during shutdown, a double-forked helper) is killed too. Returns (seconds
    taken, whether KILL was needed); raises TreeSurvived if anything survives KILL.
    """
    import psutil

    started = time.monotonic()
    tree = process_tree(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    alive = _wait_gone(tree, grace_s)
    strays = [member for member in _still_running(_session_members(proc.pid)) if member not in alive and member.pid != proc.pid]
    doomed = alive + strays
    for member in doomed:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            continue
    survivors = _wait_gone(doomed, KILL_WAIT_S)
    if survivors:
        raise TreeSurvived(f"processes survived SIGKILL: {[member.pid for member in survivors]}")
    proc.wait(timeout=KILL_WAIT_S)  # gone or a zombie by now: this only collects its status
    _reap([member.pid for member in tree + strays if member.pid != proc.pid])
    killed = bool(doomed)
    return time.monotonic() - started, killed


class _PeriodicSampler:
    """Runs sample() every `interval_s` in a daemon thread between _start_thread() and _halt()."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._halted = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._halted.wait(self._interval_s):
            self.sample()

    def _start_thread(self) -> None:
        self._thread.start()

    def _halt(self) -> None:
        """Stops the thread, then takes one last sample, so the window ends now and not up to a tick ago."""
        self._halted.set()
        self._thread.join(timeout=self._interval_s + SS_TIMEOUT_S)
        self.sample()


class TreeSampler(_PeriodicSampler):
    """CPU seconds, peak RSS and PSS of the server's whole process tree over the measured window,
    and its PSS at the end.

    CPU per process is user+system plus its reaped children's, so a worker that exits and is reaped
    during the run still counts; a process gone by the end keeps the last value seen. PSS
    (smaps_rollup) splits pages the workers share with the arbiter, where RSS counts them in every
    process: the sum of PSS is what the tree really costs. PSS is read every PSS_EVERY-th sample
    (and in the last): the kernel walks every page table for it, and read ten times a second it
    stole enough CPU from a loaded 2-core box to triple prefork's p99 with 1000 connections.
    """

    def __init__(self, root_pid: int) -> None:
        super().__init__(SAMPLE_INTERVAL_S)
        self._root_pid = root_pid
        self._baseline: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._peak_rss = 0
        self._peak_pss = 0
        self._pss: int | None = None  # the latest sample's total; None if any member's was unreadable
        self._max_processes = 0
        self._samples = 0

    def sample(self, with_pss: bool | None = None) -> None:
        import psutil

        if with_pss is None:  # and always in the last one, which _halt takes after halting
            with_pss = self._samples % PSS_EVERY == 0 or self._halted.is_set()
        self._samples += 1
        rss_total = 0
        pss_total: int | None = 0
        tree = process_tree(self._root_pid)
        for proc in tree:
            pss = None
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss_total += proc.memory_info().rss
                    if with_pss:
                        try:
                            pss = proc.memory_full_info().pss
                        except psutil.AccessDenied:
                            pass
            except psutil.NoSuchProcess:
                continue
            self._last[proc.pid] = times.user + times.system + times.children_user + times.children_system
            pss_total = None if pss is None or pss_total is None else pss_total + pss
        self._peak_rss = max(self._peak_rss, rss_total)
        self._max_processes = max(self._max_processes, len(tree))
        if with_pss:
            self._pss = pss_total
            self._peak_pss = max(self._peak_pss, pss_total or 0)

    def start(self) -> None:
        self.sample()
        self._baseline = dict(self._last)
        self._start_thread()

    def memory_now(self) -> IdleMemory:
        """One sample, memory only, without the thread: the idle measurement."""
        self.sample(with_pss=True)
        return IdleMemory(
            processes=self._max_processes, rss_mib=self._peak_rss / MIB,
            pss_mib=self._pss / MIB if self._pss is not None else None,
        )

    def stop(self) -> Usage:
        self._halt()  # (its last sample reads PSS: "PSS after" is now, not up to a second ago)
        cpu = sum(value - self._baseline.get(pid, 0.0) for pid, value in self._last.items())
        return Usage(
            cpu_s=cpu, peak_rss_mib=self._peak_rss / MIB, processes=self._max_processes,
            peak_pss_mib=self._peak_pss / MIB if self._peak_pss else None,
            pss_after_mib=self._pss / MIB if self._pss is not None else None,
        )


def ss_command(server_port: int) -> list[str]:
    """Client-side sockets connected to the server port (dport), with TCP info (-i)."""
    return ["ss", "-tinH", "state", "established", f"( dport = :{server_port} )"]


class ConnectionSampler(_PeriodicSampler):
    """Bytes received per client connection to the server, from the kernel (ss), kept at their highest.

    Counting on the client side needs nothing from the server or the app, and no Lua response()
    hook in wrk (which would copy every body and slow the load generator down).
    """

    def __init__(self, server_port: int) -> None:
        super().__init__(SS_INTERVAL_S)
        self._command = ss_command(server_port)
        self.received: dict[int, int] = {}

    def sample(self) -> None:
        completed = subprocess.run(self._command, capture_output=True, text=True, timeout=SS_TIMEOUT_S, check=True)
        for port, value in parse_ss_received(completed.stdout).items():
            self.received[port] = max(value, self.received.get(port, 0))

    def start(self) -> None:
        self._start_thread()

    def stop(self) -> dict[int, int]:
        self._halt()
        return self.received


# --------------------------------------------------------------------------------------------
# Our own clients: Connection: close load on a unix socket, and the slow-clients scenario
# --------------------------------------------------------------------------------------------


class ResponseError(Exception):
    """A response we cannot take: a bad head, no Content-Length, or the connection ended early."""


MAX_RESPONSE_HEAD = 64 * 1024
RECV_BYTES = 256 * 1024


class ResponseReader:
    """One HTTP/1.x response, fed the bytes as they arrive. The body is hashed, and only its start
    kept: forty 8 MiB downloads at once must not cost the client 320 MiB. Every app here sets
    Content-Length, so a response without one is an error rather than a case to handle."""

    KEEP_BODY_BYTES = 4096

    def __init__(self) -> None:
        self._head = bytearray()
        self.status: int | None = None
        self.length: int | None = None
        self.received = 0  # body bytes
        self.total_bytes = 0  # head and body, as wrk counts them
        self.body_start = bytearray()
        self.digest = hashlib.sha256()

    def feed(self, data: bytes) -> bool:
        """Takes the next bytes; True once the whole response is in. Raises on EOF (b"") before that."""
        if not data:
            where = "before the end of the head" if self.length is None else f"after {self.received:,} of {self.length:,} body bytes"
            raise ResponseError(f"closed {where}")
        self.total_bytes += len(data)
        if self.length is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_RESPONSE_HEAD:
                    raise ResponseError(f"no end of head in {len(self._head):,} bytes")
                return False
            self._parse_head(bytes(self._head[:end]))
            data = bytes(self._head[end + 4:])
            self._head.clear()
        data = data[:self.length - self.received]  # bytes beyond belong to no request of ours
        self.received += len(data)
        self.digest.update(data)
        self.body_start += data[:max(0, self.KEEP_BODY_BYTES - len(self.body_start))]
        return self.received >= self.length

    def _parse_head(self, head: bytes) -> None:
        status_line, *fields = head.split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ResponseError(f"bad status line {status_line[:80]!r}")
        for field in fields:
            name, _, value = field.partition(b":")
            if name.strip().lower() == b"content-length":
                self.length = int(value.strip())
        if self.length is None:
            raise ResponseError(f"status {int(parts[1])} without Content-Length")
        self.status = int(parts[1])


CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
LOAD_ERROR_KINDS = ("connect", "read", "write", "status", "timeout")  # wrk's


def _unix_close_load(path: str, connections: int, duration_s: float, pipe: multiprocessing.connection.Connection) -> None:
    """One load process: keeps `connections` Connection: close requests in flight on the unix
    socket until the time is up, then sends its counts and latencies (µs) down the pipe. Requests
    still in flight at the end are not counted, as in wrk."""
    selector = selectors.DefaultSelector()
    errors = dict.fromkeys(LOAD_ERROR_KINDS, 0)
    latencies_us: list[int] = []
    received_bytes = 0
    started = time.monotonic()
    end = started + duration_s
    hold_off_until = 0.0  # after a failed connect (full backlog) or send: wait a tick rather than spin

    def finish(sock: socket.socket) -> None:
        selector.unregister(sock)
        sock.close()

    while (now := time.monotonic()) < end:
        while len(selector.get_map()) < connections and now >= hold_off_until:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            failed = "connect"
            try:
                sock.connect(path)
                failed = "write"
                sock.send(CLOSE_REQUEST)
            except OSError:
                sock.close()
                errors[failed] += 1
                hold_off_until = now + UNIX_LOAD_SELECT_S
                break
            selector.register(sock, selectors.EVENT_READ, (now, ResponseReader()))
        for key, _ in selector.select(timeout=min(UNIX_LOAD_SELECT_S, max(0.0, end - now))):
            begun, reader = key.data
            try:
                complete = reader.feed(key.fileobj.recv(RECV_BYTES))
            except BlockingIOError:
                continue
            except (OSError, ResponseError):
                errors["read"] += 1
                finish(key.fileobj)
                continue
            if complete:
                latencies_us.append(int((time.monotonic() - begun) * 1e6))
                received_bytes += reader.total_bytes
                errors["status"] += reader.status >= 400
                finish(key.fileobj)
        now = time.monotonic()
        for key in list(selector.get_map().values()):
            if now - key.data[0] > REQUEST_TIMEOUT_S:
                errors["timeout"] += 1
                finish(key.fileobj)
    for key in list(selector.get_map().values()):
        finish(key.fileobj)
    pipe.send({"duration_us": int((time.monotonic() - started) * 1e6), "bytes": received_bytes, "errors": errors, "latencies_us": latencies_us})
    pipe.close()


def merge_load_reports(reports: Sequence[dict]) -> dict:
    """The load processes' reports as one, in report.lua's format (wrk_result_from_report reads it)."""
    latencies = sorted(value for report in reports for value in report["latencies_us"])
    latency = {"p50": 0, "p90": 0, "p99": 0, "max": 0, "mean": 0.0}
    if latencies:
        latency = {
            "p50": percentile(latencies, 0.5), "p90": percentile(latencies, 0.9), "p99": percentile(latencies, 0.99),
            "max": latencies[-1], "mean": statistics.fmean(latencies),
        }
    return {
        "duration_us": max(report["duration_us"] for report in reports),
        "requests": len(latencies),
        "bytes": sum(report["bytes"] for report in reports),
        "errors": {kind: sum(report["errors"][kind] for report in reports) for kind in LOAD_ERROR_KINDS},
        "latency_us": latency,
    }


def run_unix_load(path: Path, connections: int, duration_s: float, processes: int = UNIX_LOAD_PROCESSES) -> WrkResult:
    """Connection: close load on a unix socket (wrk has no unix sockets), from forked processes.

    Forked, not spawned: the child runs one function of this module, whether it was started as a
    script or loaded by the tests. A process that sends no report in time is killed, and the
    run is an error, like a wrk that printed no report line.
    """
    context = multiprocessing.get_context("fork")
    shares = [connections // processes + (index < connections % processes) for index in range(processes)]
    children = []
    for share in filter(None, shares):
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_unix_close_load, args=(str(path), share, duration_s, sender), daemon=True)
        child.start()
        sender.close()
        children.append((child, receiver))
    deadline = time.monotonic() + duration_s + WRK_SLACK_S
    reports = []
    try:
        for child, receiver in children:
            if not receiver.poll(max(0.0, deadline - time.monotonic())):
                raise WrkOutputError(f"unix load process {child.pid} sent no report within {duration_s + WRK_SLACK_S:.0f} s")
            reports.append(receiver.recv())
    except EOFError as exc:
        raise WrkOutputError("a unix load process exited without a report") from exc
    finally:
        for child, receiver in children:
            receiver.close()
            child.join(timeout=KILL_WAIT_S)
            if child.is_alive():
                child.kill()
                child.join(timeout=KILL_WAIT_S)
    return wrk_result_from_report(merge_load_reports(reports))


@functools.cache
def transfer_app():
    """The slow-clients app module itself: its content() is what every download must match."""
    spec = importlib.util.spec_from_file_location("bench_transfer_app", APPS_DIR / "transfer_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _send_some(sock: socket.socket, data: memoryview, deadline: float) -> int:
    """Sends what the server takes before the deadline; returns how many bytes that was."""
    sent = 0
    while sent < len(data) and (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            sent += sock.send(data[sent:])
        except TimeoutError:
            break
    return sent


def _fault(exc: BaseException) -> str:
    """A fault kind to count: our own message for a bad response, the exception type for the rest
    (one kind per type, not per errno text, so that the counts add up)."""
    return str(exc) if isinstance(exc, ResponseError) else type(exc).__name__


def timed_hello(bind: Bind, timeout_s: float) -> float:
    """One ordinary GET / on a fresh connection, all within timeout_s; its latency in ms.
    Raises ResponseError or OSError (TimeoutError included) with what went wrong."""
    started = time.monotonic()
    deadline = started + timeout_s
    with connect(bind, timeout_s) as sock:
        sock.sendall(CLOSE_REQUEST)
        reader = ResponseReader()
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if reader.feed(sock.recv(RECV_BYTES)):
                break
        else:
            raise TimeoutError(f"no whole response within {timeout_s:g} s")
    if reader.status != 200 or bytes(reader.body_start) != transfer_app().HELLO_BODY:
        raise ResponseError(f"status {reader.status}, body {bytes(reader.body_start)[:40]!r}")
    return (time.monotonic() - started) * 1000


def _ordinary_requests(bind: Bind, plan: SlowClientsPlan, faults: collections.Counter) -> list[float]:
    """plan.ordinary GET / from plan.ordinary_concurrency threads; latencies of those answered."""
    latencies: list[float] = []
    numbers = iter(range(plan.ordinary))
    lock = threading.Lock()
    deadline = time.monotonic() + plan.ordinary_phase_max_s

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                if next(numbers, None) is None:
                    return
            try:
                latency = timed_hello(bind, plan.ordinary_timeout_s)
            except (OSError, ResponseError) as exc:
                with lock:
                    faults[f"ordinary: {_fault(exc)}"] += 1
                continue
            with lock:
                latencies.append(latency)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(plan.ordinary_concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=plan.ordinary_phase_max_s + plan.ordinary_timeout_s + 1)
    not_sent = plan.ordinary - len(latencies) - sum(count for kind, count in faults.items() if kind.startswith("ordinary:"))
    if not_sent:
        faults[f"ordinary: not sent within {plan.ordinary_phase_max_s:.0f} s"] += not_sent
    return latencies


@dataclasses.dataclass
class _Transfer:
    """A slow client's connection: what it has still to send, and the response it is reading."""

    kind: str  # "download" or "upload"
    sock: socket.socket
    unsent: memoryview
    response: ResponseReader = dataclasses.field(default_factory=ResponseReader)


def _open_slow_clients(port: int, plan: SlowClientsPlan, faults: collections.Counter) -> list[_Transfer]:
    """The downloads (asked for, never read) and the uploads (head and a first part sent, then stalled)."""
    transfers = []
    download = f"GET /download?size={plan.download_bytes} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    upload_head = (
        f"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {plan.upload_bytes}\r\n\r\n"
    ).encode()
    upload = memoryview(upload_head + transfer_app().content(plan.upload_bytes))
    for kind, count in (("download", plan.downloads), ("upload", plan.uploads)):
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if kind == "download":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, plan.receive_buffer)
            sock.settimeout(plan.ordinary_timeout_s)
            try:
                sock.connect((HOST, port))
                if kind == "download":
                    sock.sendall(download)
                    unsent = memoryview(b"")
                else:
                    stall_at = len(upload_head) + plan.upload_sent_before_stall
                    sent = _send_some(sock, upload[:stall_at], time.monotonic() + plan.ordinary_timeout_s)
                    unsent = upload[sent:]
            except OSError as exc:
                faults[f"{kind}: {_fault(exc)} before the stall"] += 1
                sock.close()
                continue
            transfers.append(_Transfer(kind, sock, unsent))
    return transfers


def _transfer_is_correct(transfer: _Transfer, plan: SlowClientsPlan) -> str | None:
    """None if the response is the one expected, else what is wrong with it."""
    response = transfer.response
    if response.status != 200:
        return f"status {response.status}"
    app = transfer_app()
    if transfer.kind == "download":
        expected = hashlib.sha256(app.content(plan.download_bytes)).digest()
        if response.received != plan.download_bytes or response.digest.digest() != expected:
            return "wrong body"
        return None
    expected_answer = {"length": plan.upload_bytes, "sha256": hashlib.sha256(app.content(plan.upload_bytes)).hexdigest()}
    try:
        answer = json.loads(bytes(response.body_start))
    except ValueError:
        return "answer not JSON"
    return None if answer == expected_answer else "server got a different body"


def _resume(transfers: list[_Transfer], plan: SlowClientsPlan, faults: collections.Counter) -> dict[str, int]:
    """Every slow client at once, now at full speed: the uploads send their rest, every response is
    read whole. Returns how many of each kind came out correct."""
    correct = {"download": 0, "upload": 0}
    selector = selectors.DefaultSelector()
    for transfer in transfers:
        transfer.sock.setblocking(False)
        selector.register(transfer.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if transfer.unsent else 0), transfer)

    def finish(transfer: _Transfer, fault: str | None) -> None:
        selector.unregister(transfer.sock)
        transfer.sock.close()
        if fault is None:
            correct[transfer.kind] += 1
        else:
            faults[f"{transfer.kind}: {fault}"] += 1

    deadline = time.monotonic() + plan.resume_max_s
    while selector.get_map() and (remaining := deadline - time.monotonic()) > 0:
        for key, events in selector.select(timeout=min(remaining, 1.0)):
            transfer: _Transfer = key.data
            try:
                if events & selectors.EVENT_WRITE and transfer.unsent:
                    transfer.unsent = transfer.unsent[transfer.sock.send(transfer.unsent):]
                    if not transfer.unsent:
                        selector.modify(transfer.sock, selectors.EVENT_READ, transfer)
                if events & selectors.EVENT_READ and transfer.response.feed(transfer.sock.recv(RECV_BYTES)):
                    finish(transfer, _transfer_is_correct(transfer, plan))
            except BlockingIOError:
                continue
            except (OSError, ResponseError) as exc:
                finish(transfer, _fault(exc))
    for key in list(selector.get_map().values()):
        finish(key.data, f"not finished within {plan.resume_max_s:.0f} s")
    return correct


def run_slow_clients(port: int, plan: SlowClientsPlan = SLOW_CLIENTS) -> SlowClientsResult:
    """The slow-clients scenario against a server on 127.0.0.1:port; every phase bounded in time."""
    faults: collections.Counter = collections.Counter()
    transfers = _open_slow_clients(port, plan, faults)
    try:
        time.sleep(plan.settle_s)
        latencies = _ordinary_requests(port, plan, faults)
        correct = _resume(transfers, plan, faults)
    finally:
        for transfer in transfers:
            transfer.sock.close()
    return SlowClientsResult(
        ordinary=plan.ordinary, latencies_ms=latencies, downloads=plan.downloads, downloads_ok=correct["download"],
        uploads=plan.uploads, uploads_ok=correct["upload"], faults=dict(faults),
    )


@dataclasses.dataclass
class ServerHandle:
    proc: subprocess.Popen
    stop_s: float | None = None  # filled in when the server has been stopped
    killed: bool = False


@contextmanager
def running_server(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[ServerHandle]:
    """A server in its own session, its output in log_path; stopped (tree and all) on exit."""
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(command, cwd=APPS_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise ServerFailed(f"cannot start {command[0]}: {exc}") from exc
    handle = ServerHandle(proc)
    try:
        yield handle
    finally:
        handle.stop_s, handle.killed = stop_tree(proc)


def wrk_command(case: Case, port: int, duration_s: int) -> list[str]:
    headers = [arg for header in case.wrk_headers for arg in ("-H", header)]
    post = ["--", str(case.post_bytes)] if case.post_bytes is not None else []
    return [
        "wrk", f"-t{WRK_THREADS}", f"-c{case.connections}", f"-d{duration_s}s", "--timeout", WRK_TIMEOUT,
        "-s", str(REPORT_LUA), *headers, f"http://{HOST}:{port}/", *post,
    ]


def run_wrk(case: Case, port: int, duration_s: int) -> WrkResult:
    """wrk exits 1 when it cannot connect at all: that, like a missing report line, is an error, not 0 req/s."""
    completed = subprocess.run(wrk_command(case, port, duration_s), capture_output=True, text=True, timeout=duration_s + WRK_SLACK_S)
    if completed.returncode != 0:
        raise WrkOutputError(f"wrk exited {completed.returncode}: {completed.stderr[-LOG_TAIL_CHARS:]}")
    return wrk_result_from_report(parse_wrk_report(completed.stdout))


def _load_for(case: Case, bind: Bind) -> Callable[[int], WrkResult]:
    """The load generator of a rate case, as a function of the seconds to run."""
    if case.load is Load.UNIX_CLOSE:
        return lambda seconds: run_unix_load(bind, case.connections, seconds)
    return lambda seconds: run_wrk(case, bind, seconds)


def run_once(server: Server, case: Case, round_index: int, duration_s: int, log_dir: Path) -> RunResult:
    """One fresh server, then one warm-up and one measured load run, or the slow-clients scenario.
    A server that fails is a result, not a crash."""
    stem = f"{server.name.replace('@', '-')}-{case.name}-{round_index}"
    bind: Bind = log_dir / f"{stem}.sock" if case.load is Load.UNIX_CLOSE else free_port()
    command = server.command(case, bind)
    result = RunResult(server=server.name, case=case.name, round=round_index, command=command)
    log_path = log_dir / f"{stem}.log"
    handle: ServerHandle | None = None
    try:
        with running_server(command, server_env(server.build), log_path) as handle:
            wait_ready(handle.proc, bind, log_path)
            load = _load_for(case, bind)
            if case.load is not Load.SLOW_CLIENTS:
                load(WARMUP_S)
            tree = TreeSampler(handle.proc.pid)
            connections = ConnectionSampler(bind) if case.keepalive else None
            tree.start()
            if connections:
                connections.start()
            try:
                if case.load is Load.SLOW_CLIENTS:
                    result.slow = run_slow_clients(bind)
                else:
                    result.wrk = load(duration_s)
            finally:
                result.usage = tree.stop()
                received = connections.stop() if connections else None
            if received is not None:
                result.fairness = compute_fairness(received, result.wrk.bytes_per_response, case.connections, result.wrk.requests)
    except (ServerFailed, WrkOutputError, subprocess.TimeoutExpired) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.wrk = None
    if handle is not None:
        result.stop_s, result.killed = handle.stop_s, handle.killed
    return result


def measure_idle(server: Server, log_dir: Path, round_index: int) -> IdleMemory:
    """Total memory of the whole tree (arbiter + workers) once it is up and has served one request."""
    port = free_port()
    log_path = log_dir / f"{server.name.replace('@', '-')}-idle-{round_index}.log"
    with running_server(server.command(IDLE_MEMORY_CASE, port), server_env(server.build), log_path) as handle:
        wait_ready(handle.proc, port, log_path)
        time.sleep(IDLE_SETTLE_S)  # a fixed settle time, not a wait for a condition: workers may still be booting
        return TreeSampler(handle.proc.pid).memory_now()


# --------------------------------------------------------------------------------------------
# Output: machine info, JSON, chart
# --------------------------------------------------------------------------------------------


def machine_info() -> dict:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in VERSIONED_DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    versions["wrk"] = (wrk.stdout + wrk.stderr).splitlines()[0] if (wrk.stdout + wrk.stderr) else None
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "versions": versions,
    }


def draw_chart(summaries: dict[str, dict[str, Summary]], servers: list[str], paths: list[Path], subtitle: str) -> None:
    """One group of bars per case, req/s normalised to the fastest server of that case, absolute numbers on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(summaries)
    width = 0.8 / max(len(servers), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(cases)), 5))
    for index, server in enumerate(servers):
        heights, labels = [], []
        for case in cases:
            rps = summaries[case][server].rps.median if server in summaries[case] and summaries[case][server].rps else None
            best = max((s.rps.median for s in summaries[case].values() if s.rps), default=None)
            heights.append(rps / best if rps and best else 0)
            labels.append(f"{rps:,.0f}" if rps else "x")
        xs = [position + (index - (len(servers) - 1) / 2) * width for position in range(len(cases))]
        bars = ax.bar(xs, heights, width, label=server, edgecolor="black" if server == REFERENCE_SERVER else None)
        for bar, label in zip(bars, labels):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, label, ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(range(len(cases)), cases)
    ax.set_ylabel("req/s relative to the fastest server in the case")
    ax.set_ylim(0, 1.3)
    ax.set_title(f"WSGI servers, {WORKERS} workers each, wrk on loopback (numbers: req/s)\n{subtitle}", fontsize=10)
    ax.legend(ncols=len(servers), loc="upper center", fontsize=8)
    fig.tight_layout()
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    plt.close(fig)


def _to_jsonable(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _name_list(valid: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {unknown or text!r}; choose from {', '.join(valid)}")
        return names

    return parse


def _revision_list(text: str) -> list[str]:
    revisions = [revision.strip() for revision in text.split(",") if revision.strip()]
    if not revisions:
        raise argparse.ArgumentTypeError("give a git revision, e.g. main~1")
    return revisions


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=None, help=f"seconds per measured run (default {DEFAULT_DURATION_S})")
    parser.add_argument(
        "--rounds", type=int, default=None,
        help=f"interleaved rounds (default {DEFAULT_ROUNDS}; quote numbers from {MIN_ROUNDS_FOR_CLAIMS} or more)",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S} s per run, {QUICK_ROUNDS} round: a smoke run")
    parser.add_argument("--servers", type=_name_list(list(SERVERS)), default=list(SERVERS), help="comma-separated: " + ",".join(SERVERS))
    parser.add_argument("--cases", type=_name_list(list(CASES_BY_NAME)), default=list(CASES_BY_NAME), help="comma-separated: " + ",".join(CASES_BY_NAME))
    parser.add_argument(
        "--baseline", type=_revision_list, action="append", default=[], metavar="REV",
        help="also run prefork built from this git revision, as the row prefork@SHORTSHA (repeatable, or comma-separated)",
    )
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-memory measurement")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON and bench.png go")
    parser.add_argument("--chart", type=Path, action="append", default=[], help="also write the chart here (e.g. docs/bench.png)")
    parser.add_argument("--skip-setup", action="store_true", help="do not install anything (the re-exec passes this)")
    args = parser.parse_args(argv)
    args.baseline = [revision for group in args.baseline for revision in group]
    if args.duration is None:
        args.duration = QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    if args.duration < 1 or args.rounds < 1:
        parser.error("--duration and --rounds must be >= 1")
    return args


def rotated(items: list, by: int) -> list:
    """The server order for a round: each round starts one further along, so none is always first."""
    shift = by % len(items)
    return items[shift:] + items[:shift]


def servers_to_run(args: argparse.Namespace) -> list[Server]:
    """The --servers from the bench venv, then one prefork row per distinct --baseline commit."""
    venv = Build(Path(sys.executable).parent)
    servers = [Server(name=name, kind=name, build=venv) for name in args.servers]
    for revision in args.baseline:
        baseline = baseline_server(revision)
        if all(server.name != baseline.name for server in servers):
            servers.append(baseline)
    return servers


def raise_fd_limit(needed: int) -> None:
    """wrk's 1000 connections, and the servers' end of them (they inherit the limit), need descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors the cases need")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@dataclasses.dataclass
class Measurements:
    runs: list[RunResult]
    idle: dict[str, list[IdleMemory]]
    idle_errors: list[str]

    def of(self, case: Case, server: Server) -> list[RunResult]:
        return [run for run in self.runs if run.case == case.name and run.server == server.name]


def _run_status(result: RunResult) -> str:
    if result.error:
        return result.error
    if result.slow:
        return f"{result.slow.answered}/{result.slow.ordinary} answered, p99 {_fmt_ms(result.slow.latency_ms(0.99), ' ms')}"
    return f"{result.wrk.rps:,.0f} req/s"


def run_rounds(args: argparse.Namespace, cases: list[Case], servers: list[Server]) -> Measurements:
    """Every round: idle memory of each server, then each case with each server that can run it, in rotated order."""
    measured = Measurements(runs=[], idle={server.name: [] for server in servers}, idle_errors=[])
    with tempfile.TemporaryDirectory(prefix="prefork-bench-") as tmp:
        log_dir = Path(tmp)
        for round_index in range(args.rounds):
            order = rotated(servers, round_index)
            if not args.no_idle:
                for server in order:
                    try:
                        measured.idle[server.name].append(measure_idle(server, log_dir, round_index))
                    except ServerFailed as exc:
                        measured.idle_errors.append(f"{server.name}: {exc}")
            for case in cases:
                for server in order:
                    if not server.runs(case):
                        continue
                    result = run_once(server, case, round_index, args.duration, log_dir)
                    measured.runs.append(result)
                    print(f"round {round_index + 1}/{args.rounds}  {case.name:<12} {server.name:<15} {_run_status(result)}", flush=True)
    return measured


def _estimate_s(args: argparse.Namespace, cases: list[Case], servers: list[Server]) -> float:
    """Roughly how long the run takes, printed first: the full run is long enough to plan around."""
    per_rate_run = args.duration + WARMUP_S + 2
    per_slow_run = SLOW_CLIENTS.settle_s + 15  # when the server keeps up; a server that does not takes up to a minute more
    runs = sum(per_slow_run if case.load is Load.SLOW_CLIENTS else per_rate_run for case in cases for server in servers if server.runs(case))
    return args.rounds * (runs + (0 if args.no_idle else len(servers) * 3))


def benchmark(args: argparse.Namespace) -> int:
    become_subreaper()
    cases = [CASES_BY_NAME[name] for name in args.cases]
    servers = servers_to_run(args)
    unbuilt = [server.name for server in servers if server.revision and not baseline_is_built(server)]
    if unbuilt:
        raise SystemExit(f"{', '.join(unbuilt)} not built: run without --skip-setup")
    raise_fd_limit(max(case.connections for case in cases) + FD_HEADROOM)
    load_start = os.getloadavg()
    print(f"{len(servers)} servers x {len(cases)} cases x {args.rounds} rounds, {args.duration} s each: about {_estimate_s(args, cases, servers) / 60:.0f} min", flush=True)
    print(f"load average now: {load_start[0]:.2f} on {os.cpu_count()} cores (other work on the machine adds noise)", flush=True)
    measured = run_rounds(args, cases, servers)

    rate_cases = [case for case in cases if case.load is not Load.SLOW_CLIENTS]
    summaries = {case.name: {s.name: summarize(measured.of(case, s)) for s in servers if s.runs(case)} for case in rate_cases}
    case_ratios = {case.name: ratios({s.name: measured.of(case, s) for s in servers if s.runs(case)}) for case in rate_cases}
    slow_misses = {}
    print()
    if args.rounds < MIN_ROUNDS_FOR_CLAIMS:
        print(f"{args.rounds} round(s): the [min-max] spreads need {MIN_ROUNDS_FOR_CLAIMS} or more before any number is quoted\n")
    for case in cases:
        if case.load is Load.SLOW_CLIENTS:
            runs_by_server = {s.name: measured.of(case, s) for s in servers if s.runs(case)}
            slow_misses[case.name] = {name: slow_clients_misses(runs) for name, runs in runs_by_server.items()}
            print(format_slow_clients_table(case, runs_by_server))
        else:
            print(format_case_table(case, summaries[case.name], case_ratios[case.name], args.rounds, args.duration))
        print()
    if not args.no_idle:
        print(format_idle_table(measured.idle))
        for line in measured.idle_errors:
            print(f"  idle memory failed: {line}")
        print()

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.results_dir / f"bench-{stamp}.json"
    document = {
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "settings": {
            "duration_s": args.duration, "rounds": args.rounds, "warmup_s": WARMUP_S, "workers": WORKERS,
            "wrk_threads": WRK_THREADS, "wrk_timeout": WRK_TIMEOUT, "sample_interval_s": SAMPLE_INTERVAL_S, "pss_every": PSS_EVERY,
            "ss_interval_s": SS_INTERVAL_S, "unix_load_processes": UNIX_LOAD_PROCESSES,
            "slow_clients": SLOW_CLIENTS, "slow_clients_bars": SLOW_CLIENTS_BARS,
        },
        "servers": {server.name: server.note() for server in servers},
        "cases": {case.name: dataclasses.asdict(case) for case in cases},
        "summary": summaries,
        "ratios": case_ratios,
        "slow_clients_misses": slow_misses,
        "idle_memory": measured.idle,
        "idle_errors": measured.idle_errors,
        "runs": measured.runs,
    }
    json_path.write_text(json.dumps(document, indent=2, default=_to_jsonable))
    chart_paths = [args.results_dir / CHART_NAME, *args.chart]
    machine = document["machine"]
    subtitle = f"median of {args.rounds} x {args.duration} s, {machine['cores']} cores ({machine['cpu_model']}), Python {machine['python']}, {document['created']}"
    draw_chart(summaries, [server.name for server in servers], chart_paths, subtitle)
    print(f"wrote {json_path}")
    print(f"wrote {', '.join(str(path) for path in chart_paths)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.skip_setup:
        ensure_tools()
        ensure_venv()
        for revision in args.baseline:
            ensure_baseline(baseline_server(revision))
    if not running_in_venv():
        if not venv_python().exists():
            raise SystemExit(f"{venv_python()} does not exist: run without --skip-setup once")
        python = str(venv_python())
        forwarded = list(sys.argv[1:] if argv is None else argv)
        os.execv(python, [python, str(Path(__file__).resolve()), *forwarded, "--skip-setup"])
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
