#!/usr/bin/env python3
"""Benchmark prefork against gunicorn, uWSGI, granian and waitress: the one place its speed is judged.

    python scripts/bench.py                      # full run (about 10 minutes)
    python scripts/bench.py --quick              # 1 s per run, 1 round: a smoke run
    python scripts/bench.py --servers prefork,gunicorn --cases hello,io --duration 3
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
p50/p99 latency, wrk's error counts, the server tree's CPU seconds and peak RSS (psutil, 100 ms
samples), and fairness: responses per connection (min/median/max), from the bytes each of wrk's
connections received (the kernel's count, read with `ss -ti` every 0.5 s, divided by the response
size) with connections that never got an answer counted as 0.
Per case the table shows medians over rounds and prefork's req/s ratio to each peer.

What each server gets (2 workers where the server has workers; same app file for all):
  prefork   -w 2                                   I/O case: --threads 4
  gunicorn  sync worker, -w 2                      I/O case: -k gthread --threads 4
            (the sync worker closes every connection after one response: gunicorn's design)
  uwsgi     --http-socket --add-header 'Connection: close' --master --processes 2 --listen 2048
            --die-on-term --need-app --disable-logging      I/O case: --threads 4
            (--http-socket closes every connection; --http11-socket keeps them alive, but each
            worker then serves one connection until the client leaves: 30 of 32 starve)
  granian   --interface wsgi --workers 2             I/O case: --blocking-threads 4
            (its default runs the app on up to 256 threads per worker, started on demand;
            that measured faster than --blocking-threads 1 on hello, so it keeps it)
  waitress  one process, --threads 4 in every case (it has no multi-process mode)

Only the standard library is imported at module level: the script has to start on a bare
interpreter to build its own venv. psutil and matplotlib are imported where they are used, which
is always after the re-exec into the venv (or inside the test suite, which has psutil).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime
import http.client
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
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
RESULTS_DIR = SCRIPTS_DIR / "results"
CHART_NAME = "bench.png"

# What the venv holds besides prefork. psutil measures the servers, matplotlib draws the chart.
PEER_PACKAGES = ("gunicorn", "uwsgi", "granian", "waitress", "flask", "matplotlib", "psutil")
PEERS_MARKER = ".peers-installed"
DEBIAN_TOOLS = {"wrk": "wrk", "ss": "iproute2"}  # command -> Debian package
VERSIONED_DISTRIBUTIONS = ("prefork", "gunicorn", "uWSGI", "granian", "waitress", "flask", "psutil", "matplotlib")
INSTALL_TIMEOUT_S = 1800.0  # uWSGI compiles from source: minutes on 2 cores

REFERENCE_SERVER = "prefork"
HOST = "127.0.0.1"
WORKERS = 2
IO_THREADS = 4
WAITRESS_THREADS = 4
CONNECTIONS = 32
IO_CONNECTIONS = 64
WRK_THREADS = 1
WRK_TIMEOUT = "2s"
WRK_SLACK_S = 20.0  # on top of the run's duration before we give up on a wrk process
WARMUP_S = 1  # wrk takes whole seconds
DEFAULT_DURATION_S = 5
DEFAULT_ROUNDS = 2
QUICK_DURATION_S = 1
QUICK_ROUNDS = 1

READY_TIMEOUT_S = 15.0
READY_POLL_S = 0.05
READY_REQUEST_TIMEOUT_S = 1.0
STOP_GRACE_S = 10.0  # TERM, then KILL: gunicorn's graceful stop alone may take its 30 s
KILL_WAIT_S = 5.0
GONE_POLL_S = 0.02
SAMPLE_INTERVAL_S = 0.1
SS_INTERVAL_S = 0.5  # one `ss` call costs a few ms of CPU: sampled less often than the process tree
SS_TIMEOUT_S = 5.0
IDLE_SETTLE_S = 1.0
LOG_TAIL_CHARS = 2000
MIB = 1024 * 1024
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
WRK_JSON_MARKER = "BENCH_JSON "


# --------------------------------------------------------------------------------------------
# Cases and servers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One workload: which app callable, how wrk drives it, and what the servers get for it."""

    name: str
    title: str
    app: str  # "module:callable", module file in APPS_DIR
    connections: int = CONNECTIONS
    wrk_headers: tuple[str, ...] = ()
    post_bytes: int | None = None
    threaded: bool = False  # servers get their thread options (the I/O-bound case)
    keepalive: bool = True  # False: one request per connection, so per-connection fairness means nothing


CASES: tuple[Case, ...] = (
    Case("hello", "hello world, keep-alive", "wsgi_app:hello"),
    Case("hello-close", "hello world, Connection: close", "wsgi_app:hello", wrk_headers=("Connection: close",), keepalive=False),
    Case("json16k", "16 KiB JSON, encoded per request", "wsgi_app:json16k"),
    Case("big1m", "1 MiB response", "wsgi_app:big1m"),
    Case("post4k", "4 KiB POST echo", "wsgi_app:echo", post_bytes=4096),
    Case("flask", "Flask hello world", "flask_app:app"),
    Case("io", "I/O-bound app (10 ms sleep), threads", "wsgi_app:io", connections=IO_CONNECTIONS, threaded=True),
)
CASES_BY_NAME = {case.name: case for case in CASES}
IDLE_MEMORY_CASE = CASES_BY_NAME["hello"]


def _prefork_command(bin_dir: Path, case: Case, port: int) -> list[str]:
    threads = ["--threads", str(IO_THREADS)] if case.threaded else []
    return [str(bin_dir / "prefork"), "-w", str(WORKERS), "-b", f"{HOST}:{port}", *threads, case.app]


def _gunicorn_command(bin_dir: Path, case: Case, port: int) -> list[str]:
    worker = ["-k", "gthread", "--threads", str(IO_THREADS)] if case.threaded else []
    return [str(bin_dir / "gunicorn"), "-w", str(WORKERS), "-b", f"{HOST}:{port}", "--log-level", "warning", *worker, case.app]


def _uwsgi_command(bin_dir: Path, case: Case, port: int) -> list[str]:
    module, callable_name = case.app.split(":")
    threads = ["--threads", str(IO_THREADS)] if case.threaded else []
    return [
        str(bin_dir / "uwsgi"),
        # --http-socket closes every connection (as gunicorn's sync worker does), but without
        # saying so: the header makes the close explicit, else wrk counts each one as a read error.
        # --http11-socket keeps connections alive but a worker then serves one connection until
        # the client leaves: measured, 2 of wrk's 32 connections got every answer, 30 got none.
        "--http-socket", f"{HOST}:{port}", "--add-header", "Connection: close",
        "--master", "--processes", str(WORKERS),
        "--wsgi-file", str(APPS_DIR / f"{module}.py"), "--callable", callable_name,
        "--listen", "2048",  # gunicorn's and prefork's backlog; uWSGI's default is 100
        "--die-on-term",  # uWSGI 2.0 reloads on TERM otherwise
        "--need-app", "--disable-logging",
        *threads,
    ]


def _granian_command(bin_dir: Path, case: Case, port: int) -> list[str]:
    # Without the option granian starts up to backlog/workers/2 (256) app threads per worker on
    # demand; that measured faster than 1 thread on hello, so the CPU-bound cases keep it.
    threads = ["--blocking-threads", str(IO_THREADS)] if case.threaded else []
    return [
        str(bin_dir / "granian"), "--interface", "wsgi", "--workers", str(WORKERS), *threads,
        "--host", HOST, "--port", str(port), "--log-level", "warning", case.app,
    ]


def _waitress_command(bin_dir: Path, case: Case, port: int) -> list[str]:
    return [str(bin_dir / "waitress-serve"), f"--listen={HOST}:{port}", f"--threads={WAITRESS_THREADS}", case.app]


CommandBuilder = Callable[[Path, Case, int], list[str]]
SERVERS: dict[str, CommandBuilder] = {
    "prefork": _prefork_command,
    "gunicorn": _gunicorn_command,
    "uwsgi": _uwsgi_command,
    "granian": _granian_command,
    "waitress": _waitress_command,
}
SERVER_NOTES = {
    "prefork": f"-w {WORKERS}; I/O case: --threads {IO_THREADS}",
    "gunicorn": f"sync worker -w {WORKERS} (closes each connection after one response); I/O case: -k gthread --threads {IO_THREADS}",
    "uwsgi": f"--http-socket (closes each connection; --http11-socket starves all but {WORKERS} connections) --master --processes {WORKERS} --listen 2048; I/O case: --threads {IO_THREADS}",
    "granian": f"--interface wsgi --workers {WORKERS} (default app threads: up to 256 per worker); I/O case: --blocking-threads {IO_THREADS}",
    "waitress": f"single process, --threads {WAITRESS_THREADS} in every case (no multi-process mode)",
}


def server_label(server: str, case: Case) -> str:
    """The name shown in tables: says when a server runs a different worker type for this case."""
    if server == "gunicorn" and case.threaded:
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


@dataclasses.dataclass
class WrkResult:
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


def compute_fairness(received: dict[int, int], bytes_per_response: float, connections: int) -> Fairness | None:
    """min/median/max responses per connection, from the bytes each client connection received.

    Every response in a case has the same size, so bytes / bytes_per_response is the count of
    responses. wrk opened `connections` connections; any that ss never saw are counted as 0
    (never answered), so a starved connection shows as min 0 rather than vanishing.
    """
    if connections < 1:
        return None
    if bytes_per_response > 0:
        counts = [round(value / bytes_per_response) for value in received.values()]
    else:
        counts = [0] * len(received)
    counts.extend([0] * (connections - len(counts)))
    counts.sort()
    return Fairness(min=counts[0], median=statistics.median(counts), max=counts[-1], connections=len(received))


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


@dataclasses.dataclass
class Usage:
    """What the server's process tree cost over the measured window."""

    cpu_s: float
    peak_rss_mib: float
    processes: int  # most processes seen in the tree at once


@dataclasses.dataclass
class RunResult:
    server: str
    case: str
    round: int
    command: list[str]
    wrk: WrkResult | None = None
    usage: Usage | None = None
    fairness: Fairness | None = None  # None in the Connection: close case
    error: str | None = None
    stop_s: float | None = None
    killed: bool = False  # TERM was not enough


@dataclasses.dataclass
class Summary:
    """One server on one case, over all rounds."""

    runs: int
    failures: int
    requests: int  # over all rounds
    rps: float | None
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    error_kinds: dict[str, int]  # wrk's kinds, added up over the rounds; only the non-zero ones
    cpu_s: float | None
    requests_per_cpu_s: float | None
    peak_rss_mib: float | None
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
        rps=_median_or_none([w.rps for w in wrks]),
        p50_ms=_median_or_none([w.p50_ms for w in wrks]),
        p99_ms=_median_or_none([w.p99_ms for w in wrks]),
        errors=sum(error_kinds.values()),
        error_kinds=error_kinds,
        cpu_s=_median_or_none(cpu),
        requests_per_cpu_s=requests / sum(cpu) if sum(cpu) > 0 else None,
        peak_rss_mib=_median_or_none([u.peak_rss_mib for u in usages]),
        fairness=Fairness(
            min=min(f.min for f in fair),
            median=statistics.median(f.median for f in fair),
            max=max(f.max for f in fair),
            connections=max(f.connections for f in fair),
        ) if fair else None,
        first_error=next((run.error for run in runs if run.error), None),
    )


def ratios(rps_by_server: dict[str, float | None], reference: str = REFERENCE_SERVER) -> dict[str, float | None]:
    """reference's req/s divided by each peer's; None where either side has no number."""
    ref = rps_by_server.get(reference)
    out: dict[str, float | None] = {}
    for server, rps in rps_by_server.items():
        if server == reference:
            continue
        out[server] = ref / rps if ref and rps else None
    return out


def format_ratio_line(ratio_by_peer: dict[str, float | None], reference: str = REFERENCE_SERVER) -> str:
    parts = [
        f"{reference} / {peer} = {ratio:.2f}x" if ratio is not None else f"{reference} / {peer} = n/a"
        for peer, ratio in ratio_by_peer.items()
    ]
    return "   ".join(parts)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_fairness(fairness: Fairness | None, case: Case) -> str:
    if not case.keepalive:
        return "n/a (close)"
    if fairness is None:
        return "-"
    if fairness.connections > case.connections:
        # More connections than wrk keeps open: the server closed some (gunicorn's sync worker
        # and uWSGI's --http-socket close after every response), and a spread over short-lived
        # connections says nothing about whether wrk's connections were all served.
        return f"n/a (server closes: {fairness.connections} conns)"
    return f"{fairness.min}/{fairness.median:g}/{fairness.max}"


TABLE_COLUMNS = ("server", "req/s", "p50 ms", "p99 ms", "errors", "CPU s", "req/CPU-s", "peak RSS MiB", "fairness min/med/max")


def _render_table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_case_table(case: Case, summaries: dict[str, Summary], rounds: int, duration_s: int) -> str:
    """The per-case table: one row per server, then prefork's ratio to each peer."""
    heading = f"== {case.name}: {case.title} (wrk -t{WRK_THREADS} -c{case.connections}, {rounds} x {duration_s} s) =="
    rows: list[tuple[str, ...]] = [TABLE_COLUMNS]
    for server, summary in summaries.items():
        label = server_label(server, case)
        if summary.rps is None:
            rows.append((label, f"failed: {summary.first_error}"[:60], *([""] * (len(TABLE_COLUMNS) - 2))))
            continue
        rows.append((
            label,
            _fmt(summary.rps, ",.0f"),
            _fmt(summary.p50_ms, ".2f"),
            _fmt(summary.p99_ms, ".2f"),
            str(summary.errors) + (f" +{summary.failures} failed" if summary.failures else ""),
            _fmt(summary.cpu_s, ".2f"),
            _fmt(summary.requests_per_cpu_s, ",.0f"),
            _fmt(summary.peak_rss_mib, ".1f"),
            format_fairness(summary.fairness, case),
        ))
    lines = [heading, *_render_table(rows)]
    for server, summary in summaries.items():
        if summary.errors:
            kinds = ", ".join(f"{kind} {count:,}" for kind, count in summary.error_kinds.items())
            lines.append(f"  ! {server}: {summary.errors:,} errors ({kinds}) in {summary.requests:,} requests; its req/s counts failed responses too")
    if REFERENCE_SERVER in summaries and len(summaries) > 1:
        lines.append(format_ratio_line(ratios({s: summ.rps for s, summ in summaries.items()})))
    return "\n".join(lines)


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


def server_env(bin_dir: Path) -> dict[str, str]:
    """Same environment for every server: the apps on sys.path, the venv first on PATH, no inherited tuning."""
    env = {key: value for key, value in os.environ.items() if key not in ("WEB_CONCURRENCY", "PREFORK_CMD_ARGS", "GUNICORN_CMD_ARGS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(APPS_DIR)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:].strip() if path.exists() else ""


def wait_ready(proc: subprocess.Popen, port: int, log_path: Path, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Polls GET / until the server answers; returns seconds taken. Raises if it exits or never answers."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"exited with code {proc.returncode} before answering: {_log_tail(log_path)}")
        conn = http.client.HTTPConnection(HOST, port, timeout=READY_REQUEST_TIMEOUT_S)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return time.monotonic() - started
        except (OSError, http.client.HTTPException):
            time.sleep(READY_POLL_S)
        finally:
            conn.close()
    raise ServerFailed(f"no answer on {HOST}:{port} within {timeout_s:.0f} s: {_log_tail(log_path)}")


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
    """CPU seconds and peak RSS of the server's whole process tree over the measured window.

    CPU per process is user+system plus its reaped children's, so a worker that exits and is reaped
    during the run still counts; a process gone by the end keeps the last value seen.
    """

    def __init__(self, root_pid: int) -> None:
        super().__init__(SAMPLE_INTERVAL_S)
        self._root_pid = root_pid
        self._baseline: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._peak_rss = 0
        self._max_processes = 0

    def sample(self) -> None:
        import psutil

        rss_total = 0
        tree = process_tree(self._root_pid)
        for proc in tree:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss = proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            self._last[proc.pid] = times.user + times.system + times.children_user + times.children_system
            rss_total += rss
        self._peak_rss = max(self._peak_rss, rss_total)
        self._max_processes = max(self._max_processes, len(tree))

    def start(self) -> None:
        self.sample()
        self._baseline = dict(self._last)
        self._start_thread()

    def stop(self) -> Usage:
        self._halt()
        cpu = sum(value - self._baseline.get(pid, 0.0) for pid, value in self._last.items())
        return Usage(cpu_s=cpu, peak_rss_mib=self._peak_rss / MIB, processes=self._max_processes)


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


def run_once(server: str, case: Case, round_index: int, duration_s: int, bin_dir: Path, log_dir: Path) -> RunResult:
    """One fresh server, one warm-up, one measured wrk run. A server that fails is a result, not a crash."""
    port = free_port()
    command = SERVERS[server](bin_dir, case, port)
    result = RunResult(server=server, case=case.name, round=round_index, command=command)
    log_path = log_dir / f"{server}-{case.name}-{round_index}.log"
    handle: ServerHandle | None = None
    try:
        with running_server(command, server_env(bin_dir), log_path) as handle:
            wait_ready(handle.proc, port, log_path)
            run_wrk(case, port, WARMUP_S)
            tree = TreeSampler(handle.proc.pid)
            connections = ConnectionSampler(port) if case.keepalive else None
            tree.start()
            if connections:
                connections.start()
            try:
                result.wrk = run_wrk(case, port, duration_s)
            finally:
                result.usage = tree.stop()
                received = connections.stop() if connections else None
            if received is not None:
                result.fairness = compute_fairness(received, result.wrk.bytes_per_response, case.connections)
    except (ServerFailed, WrkOutputError, subprocess.TimeoutExpired) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.wrk = None
    if handle is not None:
        result.stop_s, result.killed = handle.stop_s, handle.killed
    return result


def measure_idle(server: str, bin_dir: Path, log_dir: Path, round_index: int) -> IdleMemory:
    """Total memory of the whole tree (arbiter + workers) once it is up and has served one request."""
    import psutil

    port = free_port()
    command = SERVERS[server](bin_dir, IDLE_MEMORY_CASE, port)
    log_path = log_dir / f"{server}-idle-{round_index}.log"
    with running_server(command, server_env(bin_dir), log_path) as handle:
        wait_ready(handle.proc, port, log_path)
        time.sleep(IDLE_SETTLE_S)  # a fixed settle time, not a wait for a condition: workers may still be booting
        rss = 0
        pss = 0
        pss_known = True
        tree = process_tree(handle.proc.pid)
        for member in tree:
            try:
                rss += member.memory_info().rss
                pss += member.memory_full_info().pss
            except psutil.AccessDenied:
                pss_known = False
            except psutil.NoSuchProcess:
                continue
    return IdleMemory(processes=len(tree), rss_mib=rss / MIB, pss_mib=pss / MIB if pss_known else None)


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
            rps = summaries[case][server].rps if server in summaries[case] else None
            best = max((s.rps for s in summaries[case].values() if s.rps), default=None)
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=None, help=f"seconds per measured run (default {DEFAULT_DURATION_S})")
    parser.add_argument("--rounds", type=int, default=None, help=f"interleaved rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S} s per run, {QUICK_ROUNDS} round: a smoke run")
    parser.add_argument("--servers", type=_name_list(list(SERVERS)), default=list(SERVERS), help="comma-separated: " + ",".join(SERVERS))
    parser.add_argument("--cases", type=_name_list(list(CASES_BY_NAME)), default=list(CASES_BY_NAME), help="comma-separated: " + ",".join(CASES_BY_NAME))
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-memory measurement")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON and bench.png go")
    parser.add_argument("--chart", type=Path, action="append", default=[], help="also write the chart here (e.g. docs/bench.png)")
    parser.add_argument("--skip-setup", action="store_true", help="do not install anything (the re-exec passes this)")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    if args.duration < 1 or args.rounds < 1:
        parser.error("--duration and --rounds must be >= 1")
    return args


def rotated(items: list[str], by: int) -> list[str]:
    """The server order for a round: each round starts one further along, so none is always first."""
    shift = by % len(items)
    return items[shift:] + items[:shift]


@dataclasses.dataclass
class Measurements:
    runs: list[RunResult]
    idle: dict[str, list[IdleMemory]]
    idle_errors: list[str]


def run_rounds(args: argparse.Namespace, cases: list[Case], servers: list[str], bin_dir: Path) -> Measurements:
    """Every round: idle memory of each server, then each case with each server, in rotated order."""
    measured = Measurements(runs=[], idle={server: [] for server in servers}, idle_errors=[])
    with tempfile.TemporaryDirectory(prefix="prefork-bench-") as tmp:
        log_dir = Path(tmp)
        for round_index in range(args.rounds):
            order = rotated(servers, round_index)
            if not args.no_idle:
                for server in order:
                    try:
                        measured.idle[server].append(measure_idle(server, bin_dir, log_dir, round_index))
                    except ServerFailed as exc:
                        measured.idle_errors.append(f"{server}: {exc}")
            for case in cases:
                for server in order:
                    result = run_once(server, case, round_index, args.duration, bin_dir, log_dir)
                    measured.runs.append(result)
                    status = f"{result.wrk.rps:,.0f} req/s" if result.wrk else result.error
                    print(f"round {round_index + 1}/{args.rounds}  {case.name:<12} {server:<9} {status}", flush=True)
    return measured


def benchmark(args: argparse.Namespace) -> int:
    become_subreaper()
    cases = [CASES_BY_NAME[name] for name in args.cases]
    servers: list[str] = args.servers
    per_run = args.duration + WARMUP_S + 2
    estimate = args.rounds * (len(cases) * len(servers) * per_run + (0 if args.no_idle else len(servers) * 3))
    load_start = os.getloadavg()
    print(f"{len(servers)} servers x {len(cases)} cases x {args.rounds} rounds, {args.duration} s each: about {estimate / 60:.0f} min", flush=True)
    print(f"load average now: {load_start[0]:.2f} on {os.cpu_count()} cores (other work on the machine adds noise)", flush=True)
    measured = run_rounds(args, cases, servers, Path(sys.executable).parent)

    summaries = {
        case.name: {server: summarize([r for r in measured.runs if r.case == case.name and r.server == server]) for server in servers}
        for case in cases
    }
    print()
    for case in cases:
        print(format_case_table(case, summaries[case.name], args.rounds, args.duration))
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
            "wrk_threads": WRK_THREADS, "wrk_timeout": WRK_TIMEOUT, "sample_interval_s": SAMPLE_INTERVAL_S,
            "ss_interval_s": SS_INTERVAL_S,
        },
        "servers": {server: SERVER_NOTES[server] for server in servers},
        "cases": {case.name: dataclasses.asdict(case) for case in cases},
        "summary": summaries,
        "ratios": {case: ratios({s: summ.rps for s, summ in by_server.items()}) for case, by_server in summaries.items()},
        "idle_memory": measured.idle,
        "idle_errors": measured.idle_errors,
        "runs": measured.runs,
    }
    json_path.write_text(json.dumps(document, indent=2, default=_to_jsonable))
    chart_paths = [args.results_dir / CHART_NAME, *args.chart]
    machine = document["machine"]
    subtitle = f"median of {args.rounds} x {args.duration} s, {machine['cores']} cores ({machine['cpu_model']}), Python {machine['python']}, {document['created']}"
    draw_chart(summaries, servers, chart_paths, subtitle)
    print(f"wrote {json_path}")
    print(f"wrote {', '.join(str(path) for path in chart_paths)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.skip_setup:
        ensure_tools()
        ensure_venv()
    if not running_in_venv():
        if not venv_python().exists():
            raise SystemExit(f"{venv_python()} does not exist: run without --skip-setup once")
        python = str(venv_python())
        forwarded = list(sys.argv[1:] if argv is None else argv)
        os.execv(python, [python, str(Path(__file__).resolve()), *forwarded, "--skip-setup"])
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
