"""scripts/bench.py: the parts that can be wrong without anything crashing.

A benchmark that misreads wrk, divides the wrong way round or leaves a server behind still prints
a table; these tests pin those parts. The pure ones run from recorded wrk/ss output on every run.
The process ones use tiny real processes (no server under test, no load). The ones that need
`wrk` or `ss` skip without them, and the end-to-end smoke run (a real, short benchmark) runs only
with PREFORK_BENCH_SMOKE=1 and the bench venv present: CI never runs a benchmark by accident.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import shutil
import socket
import socketserver
import subprocess
import sys
import textwrap
import threading
import time
import wsgiref.simple_server
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "scripts"
BENCH_PATH = SCRIPTS_DIR / "bench.py"
LINE_WAIT_S = 15.0


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

# A real wrk 4.1.0 run with scripts/bench_apps/report.lua against prefork (hello app, -c4, 2 s).
RECORDED_WRK = """\
Running 2s test @ http://127.0.0.1:18950/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   182.98us  410.32us   4.31ms   94.45%
    Req/Sec    36.64k     1.51k   38.27k    80.95%
  76575 requests in 2.10s, 9.64MB read
Requests/sec:  36472.50
Transfer/sec:      4.59MB
BENCH_JSON {"duration_us":2099527,"requests":76575,"bytes":10107900,"errors":{"connect":0,"read":0,"write":0,"status":0,"timeout":0},"latency_us":{"p50":92,"p90":141,"p99":2469,"max":4309,"mean":183.0}}
"""

# wrk when the server refused every connection before the report: no JSON line at all.
RECORDED_WRK_REFUSED = "unable to connect to 127.0.0.1:18950 Connection refused\n"

# Real `ss -tinH state established '( dport = :18950 )'` output, shortened info lines; the third
# socket has received nothing, and ss then prints no bytes_received field at all.
RECORDED_SS = (
    "0      41     127.0.0.1:42844 127.0.0.1:18950\n"
    "\t bbr wscale:10,10 rto:204 rtt:0.145/0.034 mss:32768 bytes_sent:383104 bytes_acked:383064"
    " bytes_received:1233276 segs_out:9348 segs_in:9345\n"
    "0      41     127.0.0.1:42860 127.0.0.1:18950\n"
    "\t bbr wscale:10,10 rto:204 rtt:0.085/0.027 mss:32768 bytes_sent:382899 bytes_acked:382859"
    " bytes_received:1232616 segs_out:9343 segs_in:9340                             \n"
    "0      41     127.0.0.1:42868 127.0.0.1:18950\n"
    "\t bbr wscale:10,10 rto:204 rtt:0.08/0.031 mss:32768 bytes_sent:41 bytes_acked:1 segs_out:2 segs_in:1\n"
)


# ---------------------------------------------------------------- wrk output -> numbers


def test_recorded_wrk_output_becomes_numbers():
    result = bench.wrk_result_from_report(bench.parse_wrk_report(RECORDED_WRK))
    assert result.requests == 76575
    assert result.duration_s == pytest.approx(2.099527)
    assert result.rps == pytest.approx(76575 / 2.099527)
    assert result.rps == pytest.approx(36472.50, rel=1e-3)  # wrk's own Requests/sec line agrees
    assert (result.p50_ms, result.p90_ms, result.p99_ms, result.max_ms) == pytest.approx((0.092, 0.141, 2.469, 4.309))
    assert result.error_total == 0
    assert result.bytes_per_response == pytest.approx(10107900 / 76575)


def test_wrk_errors_add_up_by_kind():
    report = bench.parse_wrk_report(RECORDED_WRK)
    report["errors"] = {"connect": 1, "read": 2, "write": 3, "status": 4, "timeout": 5}
    result = bench.wrk_result_from_report(report)
    assert result.errors["status"] == 4
    assert result.error_total == 15


def test_wrk_output_without_report_line_is_an_error_not_zero():
    with pytest.raises(bench.WrkOutputError, match="unable to connect"):
        bench.parse_wrk_report(RECORDED_WRK_REFUSED)


def test_wrk_report_with_no_requests_gives_zero_rates():
    report = bench.parse_wrk_report(RECORDED_WRK)
    report.update(requests=0, bytes=0)
    result = bench.wrk_result_from_report(report)
    assert (result.rps, result.bytes_per_response) == (0.0, 0.0)


# ---------------------------------------------------------------- ss output and fairness


def test_recorded_ss_output_gives_bytes_per_client_port():
    assert bench.parse_ss_received(RECORDED_SS) == {42844: 1233276, 42860: 1232616, 42868: 0}


def test_empty_ss_output_gives_no_connections():
    assert bench.parse_ss_received("") == {}


@pytest.mark.parametrize(
    ("received", "bytes_per_response", "connections", "expected"),
    [
        pytest.param({1: 1000, 2: 1000, 3: 1000, 4: 1000}, 100.0, 4, (10, 10, 10, 4), id="even"),
        pytest.param({1: 100, 2: 1000, 3: 3000, 4: 1000}, 100.0, 4, (1, 10, 30, 4), id="uneven"),
        pytest.param({1: 2000, 2: 0, 3: 2000}, 100.0, 3, (0, 20, 20, 3), id="one-seen-never-answered"),
        pytest.param({1: 5000, 2: 5000}, 100.0, 4, (0, 25, 50, 2), id="two-never-seen-count-as-zero"),
        pytest.param({}, 100.0, 2, (0, 0, 0, 0), id="nothing-seen"),
        pytest.param({1: 0, 2: 0}, 0.0, 2, (0, 0, 0, 2), id="no-responses-at-all"),
        pytest.param({1: 149, 2: 151}, 100.0, 2, (1, 1.5, 2, 2), id="rounds-to-whole-responses"),
    ],
)
def test_fairness_from_bytes_received(received, bytes_per_response, connections, expected):
    fairness = bench.compute_fairness(received, bytes_per_response, connections)
    assert (fairness.min, fairness.median, fairness.max, fairness.connections) == expected


def test_fairness_when_responses_came_on_connections_ss_never_saw():
    # A real uWSGI --http-socket run: 32 sockets seen, each with nothing received, 28,818 responses.
    received = dict.fromkeys(range(32), 0)
    assert bench.compute_fairness(received, 97.0, 32, responses=28818).unseen_responses
    assert not bench.compute_fairness({1: 1000, 2: 1000}, 100.0, 2, responses=20).unseen_responses


def test_fairness_with_no_connections_is_unknown():
    assert bench.compute_fairness({}, 100.0, 0) is None


@pytest.mark.parametrize(
    ("fairness", "case_name", "expected"),
    [
        (bench.Fairness(3, 10.5, 12, 32), "hello", "3/10.5/12"),
        (bench.Fairness(0, 0, 3000, 32), "hello", "0/0/3000"),
        (bench.Fairness(1, 1, 1, 500), "hello", "n/a (server closes: 500 conns seen)"),
        (bench.Fairness(1, 1, 1, 33), "hello", "n/a (server closes: 33 conns seen)"),
        (bench.Fairness(0, 0, 0, 32, unseen_responses=True), "hello", "n/a (server closes: 32 conns seen)"),
        (bench.Fairness(0, 1, 1, 32), "hello", "0/1/1"),
        (bench.Fairness(3, 4, 5, 32), "hello-close", "n/a (close)"),
        (None, "hello", "-"),
    ],
)
def test_fairness_column(fairness, case_name, expected):
    assert bench.format_fairness(fairness, bench.CASES_BY_NAME[case_name]) == expected


# ---------------------------------------------------------------- spreads, ratios and summaries


def _run(rps: float, *, p99: float = 2.0, errors: int = 0, cpu: float = 1.0, fairness=None, error=None, round_index: int = 0, pss: float | None = 30.0):
    if error:
        return bench.RunResult(server="s", case="hello", round=round_index, command=[], error=error)
    wrk = bench.WrkResult(
        requests=int(rps * 5), duration_s=5.0, rps=rps, p50_ms=1.0, p90_ms=1.5, p99_ms=p99, max_ms=9.0,
        errors={"connect": 0, "read": errors, "write": 0, "status": 0, "timeout": 0}, bytes_per_response=100.0,
    )
    usage = bench.Usage(cpu_s=cpu, peak_rss_mib=50.0, processes=3, peak_pss_mib=pss, pss_after_mib=pss)
    return bench.RunResult(server="s", case="hello", round=round_index, command=[], wrk=wrk, usage=usage, fairness=fairness)


def _rounds(*rps: float | None) -> list:
    """One run per round; None is a round whose run failed."""
    return [_run(value, round_index=n) if value is not None else _run(0, error="boom", round_index=n) for n, value in enumerate(rps)]


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [([1, 2, 3, 4], 0.5, 2), ([1, 2, 3, 4], 0.99, 4), ([7], 0.99, 7), (list(range(1, 101)), 0.99, 99), (list(range(1, 101)), 0.5, 50)],
)
def test_percentile_is_nearest_rank(values, fraction, expected):
    assert bench.percentile(values, fraction) == expected


def test_spread_shows_its_range_only_when_there_is_one():
    assert bench.Spread.of([3.0, 1.0, 2.0]) == bench.Spread(median=2.0, min=1.0, max=3.0, count=3)
    assert bench.Spread.of([1200.0, 1000.0, 1100.0]).format(",.0f") == "1,100 [1,000-1,200]"
    assert bench.Spread.of([2.5]).format(".2f", "x") == "2.50x"
    assert bench.Spread.of([]) is None


def test_ratios_pair_the_runs_of_each_round():
    # Round by round: 1000/100, 1100/50, 900/300 -> 10, 22, 3. The ratio of the medians would be 1000/100 = 10 too,
    # but only the per-round ratios show that one round made prefork look twice as good as another.
    ratio = bench.round_ratios(_rounds(1000.0, 1100.0, 900.0), _rounds(100.0, 50.0, 300.0))
    assert (ratio.median, ratio.min, ratio.max, ratio.count) == (10.0, 3.0, 22.0, 3)


@pytest.mark.parametrize(
    ("reference", "peer", "expected"),
    [
        pytest.param((1000.0, None, 900.0), (100.0, 50.0, 300.0), bench.Spread(6.5, 3.0, 10.0, 2), id="reference-round-failed"),
        pytest.param((1000.0, 1100.0), (None, 0.0), None, id="peer-never-worked"),
        pytest.param((1000.0,), (100.0, 200.0), bench.Spread(10.0, 10.0, 10.0, 1), id="unpaired-round-left-out"),
    ],
)
def test_ratios_leave_out_rounds_without_both_numbers(reference, peer, expected):
    assert bench.round_ratios(_rounds(*reference), _rounds(*peer)) == expected


def test_ratios_are_prefork_over_every_other_row_including_baselines():
    by_server = {"prefork": _rounds(1000.0), "gunicorn": _rounds(100.0), "prefork@e1891ea": _rounds(500.0)}
    assert {peer: ratio.median for peer, ratio in bench.ratios(by_server).items()} == {"gunicorn": 10.0, "prefork@e1891ea": 2.0}
    assert bench.ratios({"gunicorn": _rounds(100.0)}) == {"gunicorn": None}


def test_ratio_line_reads_prefork_over_peer():
    line = bench.format_ratio_line({"gunicorn": bench.Spread.of([12.3, 11.0, 13.0]), "prefork@abc1234": bench.Spread.of([1.1]), "uwsgi": None})
    assert line == "prefork / gunicorn = 12.30x [11.00-13.00]   prefork / prefork@abc1234 = 1.10x   prefork / uwsgi = n/a"


def test_summary_takes_medians_and_adds_errors():
    runs = [
        _run(100.0, p99=3.0, errors=1, fairness=bench.Fairness(5, 10, 12, 32), pss=31.0),
        _run(300.0, p99=1.0, errors=2, fairness=bench.Fairness(7, 11, 20, 32), pss=None),
        _run(200.0, p99=2.0, errors=0, fairness=bench.Fairness(6, 12, 15, 32), pss=33.0),
    ]
    summary = bench.summarize(runs)
    assert (summary.rps.median, summary.rps.min, summary.rps.max) == (200.0, 100.0, 300.0)
    assert (summary.p99_ms.median, summary.errors, summary.failures) == (2.0, 3, 0)
    assert summary.pss_after_mib == 32.0  # the round whose PSS could not be read is left out
    assert summary.error_kinds == {"read": 3}
    assert summary.requests == 500 + 1500 + 1000
    assert summary.requests_per_cpu_s == pytest.approx((500 + 1500 + 1000) / 3.0)
    assert (summary.fairness.min, summary.fairness.median, summary.fairness.max) == (5, 11, 20)


def test_summary_counts_failed_runs_and_keeps_the_reason():
    summary = bench.summarize([_run(100.0), _run(0, error="ServerFailed: exited with code 1")])
    assert (summary.runs, summary.failures, summary.rps.median) == (2, 1, 100.0)
    assert summary.first_error == "ServerFailed: exited with code 1"


def test_summary_of_only_failures_has_no_numbers():
    summary = bench.summarize([_run(0, error="ServerFailed: boom")])
    assert (summary.rps, summary.cpu_s, summary.fairness, summary.requests_per_cpu_s) == (None, None, None, None)


def _case_table(case_name: str, runs_by_server: dict, rounds: int = 1) -> str:
    summaries = {server: bench.summarize(runs) for server, runs in runs_by_server.items()}
    return bench.format_case_table(bench.CASES_BY_NAME[case_name], summaries, bench.ratios(runs_by_server), rounds=rounds, duration_s=5)


def test_case_table_shows_every_server_and_the_ratios():
    table = _case_table("hello", {
        "prefork": _rounds(1000.0, 1200.0, 1100.0),
        "gunicorn": _rounds(100.0, 100.0, 100.0),
        "uwsgi": _rounds(None, None, None),
    }, rounds=3)
    lines = table.splitlines()
    assert lines[0].startswith("== hello:")
    columns = [column.strip() for column in lines[1].split("  ") if column.strip()]
    assert columns == list(bench.TABLE_COLUMNS)
    assert "req/CPU-s" in columns and "PSS after MiB" in columns
    assert lines[2].split()[:3] == ["prefork", "1,100", "[1,000-1,200]"]
    assert lines[2].split()[-2:] == ["30.0", "-"]  # PSS after the run, then no fairness (the helper has none)
    assert "failed: boom" in lines[4]
    assert lines[-1] == "prefork / gunicorn = 11.00x [10.00-12.00]   prefork / uwsgi = n/a"


def test_case_table_says_when_req_s_includes_failed_responses():
    table = _case_table("hello", {"prefork": [_run(1000.0, errors=7)], "gunicorn": [_run(100.0)]})
    assert "  ! prefork: 7 errors (read 7) in 5,000 requests; its req/s counts failed responses too" in table.splitlines()
    assert "! gunicorn" not in table


@pytest.mark.parametrize(("case_name", "label"), [("io", "gunicorn (gthread)"), ("hello-unix", "gunicorn (gthread)"), ("slow-clients", "gunicorn (gthread)"), ("hello", "gunicorn")])
def test_table_names_gunicorns_worker_type(case_name, label):
    assert bench.server_label("gunicorn", bench.CASES_BY_NAME[case_name]) == label
    command = bench.SERVERS["gunicorn"](Path("/b"), bench.CASES_BY_NAME[case_name], 1)
    assert ("gthread" in command) == (label == "gunicorn (gthread)")


# ---------------------------------------------------------------- commands


def test_every_server_gets_the_same_app_and_port():
    case = bench.CASES_BY_NAME["json16k"]
    for name, build in bench.SERVERS.items():
        command = " ".join(build(Path("/venv/bin"), case, 8123))
        assert "8123" in command, name
        assert "json16k" in command, name


def test_threaded_case_gives_each_server_its_threads():
    io_case = bench.CASES_BY_NAME["io"]
    commands = {name: build(Path("/b"), io_case, 1) for name, build in bench.SERVERS.items()}
    assert commands["prefork"][commands["prefork"].index("--threads") + 1] == "4"
    assert commands["gunicorn"][commands["gunicorn"].index("-k") + 1] == "gthread"
    assert "--threads" in commands["uwsgi"]
    assert "--blocking-threads" in commands["granian"]
    assert "--threads" not in bench.SERVERS["prefork"](Path("/b"), bench.CASES_BY_NAME["hello"], 1)


def test_wrk_command_for_post_and_close():
    post = bench.wrk_command(bench.CASES_BY_NAME["post4k"], 9000, 5)
    assert post[-3:] == ["http://127.0.0.1:9000/", "--", "4096"]
    close = bench.wrk_command(bench.CASES_BY_NAME["hello-close"], 9000, 5)
    assert close[close.index("-H") + 1] == "Connection: close"
    assert "-d5s" in close and "-c32" in close and "-t1" in close


def test_round_order_rotates():
    servers = ["a", "b", "c"]
    assert [bench.rotated(servers, n) for n in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_quick_and_filters():
    args = bench.parse_args(["--quick", "--servers", "prefork,uwsgi", "--cases", "hello,io"])
    assert (args.duration, args.rounds, args.servers, args.cases) == (1, 1, ["prefork", "uwsgi"], ["hello", "io"])
    assert bench.parse_args(["--quick", "--duration", "3"]).duration == 3
    for bad in (["--servers", "nginx"], ["--cases", ""], ["--duration", "0"], ["--rounds", "0"], ["--baseline", ","]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_baselines_repeat_or_come_comma_separated_and_claims_get_three_rounds():
    args = bench.parse_args(["--baseline", "main~1,e1891ea", "--baseline", "HEAD"])
    assert args.baseline == ["main~1", "e1891ea", "HEAD"]
    assert args.rounds == bench.MIN_ROUNDS_FOR_CLAIMS == 3


@pytest.mark.parametrize(("server", "bind_value"), [("prefork", "unix:/tmp/b/s.sock"), ("gunicorn", "unix:/tmp/b/s.sock"), ("uwsgi", "/tmp/b/s.sock")])
def test_unix_socket_case_binds_each_server_to_the_socket(server, bind_value):
    command = bench.SERVERS[server](Path("/b"), bench.CASES_BY_NAME["hello-unix"], Path("/tmp/b/s.sock"))
    assert bind_value in command
    assert bench.HOST not in " ".join(command)


def test_cases_run_only_on_the_servers_that_can():
    venv = bench.Build(Path("/venv/bin"))
    rows = [bench.Server(name, name, venv) for name in bench.SERVERS]

    def able(case_name: str) -> list[str]:
        return sorted(row.name for row in rows if row.runs(bench.CASES_BY_NAME[case_name]))

    assert able("hello-unix") == ["gunicorn", "prefork", "uwsgi"]
    assert able("slow-clients") == ["granian", "gunicorn", "prefork"]
    assert able("hello-c1000") == sorted(bench.SERVERS)
    assert bench.wrk_command(bench.CASES_BY_NAME["hello-c1000"], 9000, 5)[2] == "-c1000"
    with pytest.raises(ValueError, match="unix"):
        bench.SERVERS["granian"](Path("/b"), bench.CASES_BY_NAME["hello"], Path("/tmp/b/s.sock"))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_baseline_row_is_named_by_short_sha_and_its_build_comes_first():
    short = subprocess.run(["git", "-C", str(SCRIPTS_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    baseline = bench.baseline_server("HEAD")
    assert (baseline.name, baseline.kind) == (f"prefork@{short}", "prefork")
    env = bench.server_env(baseline.build)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(baseline.build.python_path[0]), str(bench.APPS_DIR)]
    assert env["PATH"].startswith(f"{baseline.build.bin_dir}{os.pathsep}")
    assert baseline.command(bench.CASES_BY_NAME["hello"], 1)[0] == str(baseline.build.bin_dir / "prefork")
    args = bench.parse_args(["--servers", "prefork", "--baseline", "HEAD", "--baseline", short])
    assert [server.name for server in bench.servers_to_run(args)] == ["prefork", baseline.name]  # one row per commit
    with pytest.raises(SystemExit, match="rev-parse"):
        bench.baseline_server("no-such-revision-anywhere")


# ---------------------------------------------------------------- our own clients, from bytes

HELLO_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 13\r\n\r\nHello, World!"


@pytest.mark.parametrize("split", ["whole", "byte-by-byte", "with-trailing-bytes"])
def test_response_reader_completes_on_the_last_body_byte(split):
    data = HELLO_RESPONSE + (b"HTTP/1.1 200 OK\r\n" if split == "with-trailing-bytes" else b"")
    pieces = [data[i:i + 1] for i in range(len(data))] if split == "byte-by-byte" else [data]
    reader = bench.ResponseReader()
    assert [reader.feed(piece) for piece in pieces] == [False] * (len(pieces) - 1) + [True]
    assert (reader.status, reader.length, reader.received, bytes(reader.body_start)) == (200, 13, 13, b"Hello, World!")
    assert reader.digest.hexdigest() == bench.hashlib.sha256(b"Hello, World!").hexdigest()


@pytest.mark.parametrize(
    ("pieces", "error"),
    [
        pytest.param([b"HTTP/1.1 200 OK\r\n\r\n"], "status 200 without Content-Length", id="no-length"),
        pytest.param([b"SSH-2.0-OpenSSH\r\n\r\n"], "bad status line", id="not-http"),
        pytest.param([HELLO_RESPONSE[:-10], b""], "closed after 3 of 13 body bytes", id="closed-mid-body"),
        pytest.param([b"HTTP/1.1 200", b""], "closed before the end of the head", id="closed-mid-head"),
    ],
)
def test_response_reader_errors(pieces, error):
    reader = bench.ResponseReader()
    with pytest.raises(bench.ResponseError, match=error):
        for piece in pieces:
            reader.feed(piece)


def test_load_process_reports_merge_into_report_lua_format():
    errors = dict.fromkeys(bench.LOAD_ERROR_KINDS, 0)
    reports = [
        {"duration_us": 1_000_000, "bytes": 200, "errors": {**errors, "connect": 1}, "latencies_us": [3000, 1000]},
        {"duration_us": 1_100_000, "bytes": 100, "errors": {**errors, "read": 2}, "latencies_us": [2000]},
    ]
    result = bench.wrk_result_from_report(bench.merge_load_reports(reports))
    assert (result.requests, result.duration_s, result.bytes_per_response) == (3, 1.1, 100.0)
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (2.0, 3.0, 3.0)
    assert (result.errors["connect"], result.errors["read"], result.error_total) == (1, 2, 3)
    nothing = bench.wrk_result_from_report(bench.merge_load_reports([{**reports[0], "latencies_us": []}]))
    assert (nothing.requests, nothing.rps, nothing.p99_ms) == (0, 0.0, 0.0)


# ---------------------------------------------------------------- slow clients: bars and table


def _slow_run(*, answered=100, latency=5.0, downloads_ok=40, uploads_ok=40, rss=100.0, round_index=0, faults=None):
    slow = bench.SlowClientsResult(
        ordinary=100, latencies_ms=[latency] * answered, downloads=40, downloads_ok=downloads_ok, uploads=40,
        uploads_ok=uploads_ok, faults=faults or {},
    )
    usage = bench.Usage(cpu_s=1.0, peak_rss_mib=rss, processes=3, peak_pss_mib=rss / 2, pss_after_mib=rss / 3)
    return bench.RunResult(server="s", case="slow-clients", round=round_index, command=[], usage=usage, slow=slow)


def test_slow_clients_p99_counts_unanswered_requests_as_timeouts():
    assert _slow_run(answered=99, latency=4.0).slow.latency_ms(0.99) == 4.0
    assert _slow_run(answered=98, latency=4.0).slow.latency_ms(0.99) == float("inf")
    assert _slow_run(answered=0).slow.latency_ms(0.5) == float("inf")


@pytest.mark.parametrize(
    ("runs", "misses"),
    [
        pytest.param([_slow_run(), _slow_run(round_index=1)], [], id="meets-all"),
        pytest.param([_slow_run(), _slow_run(latency=300.0, round_index=1)], ["p99"], id="one-slow-round"),
        pytest.param([_slow_run(answered=98)], ["answered", "p99"], id="two-unanswered"),
        pytest.param([_slow_run(uploads_ok=39)], ["transfers"], id="one-bad-upload"),
        pytest.param([_slow_run(rss=401.0)], ["RSS"], id="memory"),
        pytest.param([bench.RunResult(server="s", case="slow-clients", round=0, command=[], error="ServerFailed: x")], ["ran"], id="failed"),
    ],
)
def test_slow_clients_bars_are_judged_on_the_worst_round(runs, misses):
    assert bench.slow_clients_misses(runs) == misses


def test_slow_clients_table_shows_bars_worst_rounds_and_faults():
    table = bench.format_slow_clients_table(bench.CASES_BY_NAME["slow-clients"], {
        "prefork": [_slow_run(latency=2.0), _slow_run(latency=3.0, rss=120.0, round_index=1)],
        "gunicorn": [_slow_run(answered=60, faults={"ordinary: TimeoutError": 40}), _slow_run(round_index=1)],
    })
    lines = table.splitlines()
    assert lines[1] == "bars: 100/100 answered, p99 <= 250 ms, 40/40 downloads and 40/40 uploads correct, peak RSS <= 400 MiB"
    assert [column.strip() for column in lines[2].split("  ") if column.strip()] == list(bench.SLOW_CLIENTS_COLUMNS)
    assert lines[3].split() == ["prefork", "100/100", "3.0", "3.0", "40/40", "40/40", "1.00", "120.0", "60.0", "meets", "all"]
    assert lines[4].split()[:5] == ["gunicorn", "(gthread)", "60/100", "5.0", "timeout"]  # 60 answered: the median was
    assert lines[4].endswith("misses answered, p99")
    assert lines[5] == "  ! gunicorn round 1: 40 x ordinary: TimeoutError"


# ---------------------------------------------------------------- real processes


def _read_line(stream, timeout_s: float = LINE_WAIT_S) -> str:
    ready, _, _ = select.select([stream], [], [], timeout_s)
    assert ready, "child printed nothing in time"
    return stream.readline().strip()


def test_ready_poll_reports_a_server_that_exits(tmp_path):
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; print('cannot import app'); sys.exit(3)"], stdout=out)
    started = time.monotonic()
    with pytest.raises(bench.ServerFailed, match=r"exited with code 3.*cannot import app"):
        bench.wait_ready(proc, bench.free_port(), log, timeout_s=10)
    assert time.monotonic() - started < 5


def test_ready_poll_then_a_plain_term_stop(tmp_path):
    port = bench.free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
        )
    bench.wait_ready(proc, port, log, timeout_s=10)
    seconds, killed = bench.stop_tree(proc, grace_s=5)
    assert not killed
    assert proc.returncode is not None
    assert seconds < 5


# Runs argv[2] as the "server" (it prints the pid of a process it left behind), stops it with
# stop_tree inside a subreaper, so orphans come back to us, and reports whether that pid is still
# there at all: running or a zombie would both be a leak.
STOP_SCENARIO = textwrap.dedent(
    """
    import importlib.util, json, os, subprocess, sys
    spec = importlib.util.spec_from_file_location("bench", sys.argv[1])
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = bench
    spec.loader.exec_module(bench)
    bench.become_subreaper()
    proc = subprocess.Popen([sys.executable, "-c", sys.argv[2]], stdout=subprocess.PIPE, text=True, start_new_session=True)
    left_pid = int(proc.stdout.readline())
    seconds, killed = bench.stop_tree(proc, grace_s=0.5)
    try:
        os.kill(left_pid, 0)
        left = True
    except ProcessLookupError:
        left = False
    print(json.dumps({"killed": killed, "seconds": seconds, "left": left}))
    """
)

# A parent that dies on TERM, with a child that ignores TERM.
ORPHAN_SERVER = textwrap.dedent(
    """
    import subprocess, sys, time
    child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    c = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    c.stdout.readline()
    print(c.pid, flush=True)
    time.sleep(60)
    """
)

# A parent whose helper is double-forked away: in the server's session, but never in its tree.
STRAY_SERVER = textwrap.dedent(
    """
    import subprocess, time
    pid = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True).stdout
    print(pid.strip(), flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("server_code", [ORPHAN_SERVER, STRAY_SERVER], ids=["term-ignoring-orphan", "double-forked-stray"])
def test_everything_the_server_left_is_killed_and_reaped(server_code):
    completed = subprocess.run(
        [sys.executable, "-c", STOP_SCENARIO, str(BENCH_PATH), server_code], capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    assert outcome["killed"] is True
    assert outcome["left"] is False  # neither running nor a zombie
    assert outcome["seconds"] < 15


def test_tree_sampler_counts_cpu_of_the_tree():
    spin = "import time\nwhile time.process_time() < 0.5: pass\nprint('done', flush=True)\ntime.sleep(30)\n"
    proc = subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        sampler = bench.TreeSampler(proc.pid)
        sampler.start()
        assert _read_line(proc.stdout) == "done"
        usage = sampler.stop()
    finally:
        bench.stop_tree(proc, grace_s=5)
    assert 0.3 <= usage.cpu_s < 5  # it spun 0.5 s of CPU, less whatever ran before start()
    assert usage.peak_rss_mib > 1
    assert usage.processes == 1


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_connection_sampler_sees_every_client_connection_including_unanswered():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        accepted = [listener.accept()[0] for _ in clients]
        try:
            sizes = {clients[0].getsockname()[1]: 100, clients[1].getsockname()[1]: 300, clients[2].getsockname()[1]: 0}
            for client, server_side in zip(clients, accepted):
                size = sizes[client.getsockname()[1]]
                server_side.sendall(b"x" * size)
                received = 0
                while received < size:
                    received += len(client.recv(size - received))
            sampler = bench.ConnectionSampler(port)
            sampler.sample()
        finally:
            for sock in clients + accepted:
                sock.close()
    assert sampler.received == sizes


@contextmanager
def _serving(server: socketserver.BaseServer) -> Iterator[socketserver.BaseServer]:
    """A stdlib server answering from a thread for the length of the block."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class _FixedResponse(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b"hello from the test server"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        received = self.rfile.read(length)
        self.send_response(200 if len(received) == 4096 else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")
@pytest.mark.parametrize("case_name", ["hello", "post4k"])
def test_wrk_and_report_lua_against_a_stdlib_server(case_name):
    case = bench.dataclasses.replace(bench.CASES_BY_NAME[case_name], connections=2)
    with _serving(ThreadingHTTPServer(("127.0.0.1", 0), _FixedResponse)) as server:
        result = bench.run_wrk(case, server.server_address[1], duration_s=1)
    assert result.requests > 0
    assert result.error_total == 0  # for post4k: every POST body arrived whole (else 400 -> status error)
    assert result.p50_ms <= result.p99_ms <= result.max_ms


class _CloseAfterHello(socketserver.StreamRequestHandler):
    """Reads a request head, answers hello, closes: what the unix load generator expects."""

    def handle(self):
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        self.wfile.write(HELLO_RESPONSE)


def test_unix_load_generator_against_a_stdlib_unix_server(tmp_path):
    path = tmp_path / "hello.sock"
    server = socketserver.ThreadingUnixStreamServer(str(path), _CloseAfterHello)
    server.daemon_threads = True
    with _serving(server):
        result = bench.run_unix_load(path, connections=3, duration_s=0.5)
    assert result.requests > 0
    assert result.error_total == 0
    assert result.bytes_per_response == len(HELLO_RESPONSE)
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms


def test_unix_load_generator_counts_refused_connections(tmp_path):
    result = bench.run_unix_load(tmp_path / "nobody-listens.sock", connections=2, duration_s=0.5, processes=1)
    assert result.requests == 0
    assert result.errors["connect"] > 0


class _QuietThreadingWSGIServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


SMALL_SLOW_CLIENTS = bench.SlowClientsPlan(
    downloads=3, download_bytes=1 << 20, uploads=3, upload_bytes=256 << 10, upload_sent_before_stall=16 << 10,
    ordinary=10, ordinary_concurrency=2, settle_s=0.1, ordinary_phase_max_s=10, resume_max_s=10,
)


def test_slow_clients_scenario_against_a_thread_per_connection_server():
    """A server with a thread per connection is what the scenario cannot hurt: everything must
    come out answered and correct, or the scenario itself is wrong."""
    server = _QuietThreadingWSGIServer(("127.0.0.1", 0), _QuietHandler)
    server.set_app(bench.transfer_app().app)
    started = time.monotonic()
    with _serving(server):
        result = bench.run_slow_clients(server.server_address[1], SMALL_SLOW_CLIENTS)
    assert result.faults == {}
    assert (result.answered, result.downloads_ok, result.uploads_ok) == (10, 3, 3)
    assert time.monotonic() - started < 5


def test_slow_clients_scenario_shows_a_server_that_one_slow_client_holds():
    """One thread, one connection at a time (the old worker, in miniature): while it waits on the
    first unread download, ordinary requests time out; once the clients resume, every transfer
    still comes out whole."""
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, bench.transfer_app().app, handler_class=_QuietHandler)
    plan = bench.dataclasses.replace(
        SMALL_SLOW_CLIENTS, downloads=1, download_bytes=8 << 20, uploads=1, ordinary=2, ordinary_concurrency=1, ordinary_timeout_s=0.3,
    )
    started = time.monotonic()
    with _serving(server):
        result = bench.run_slow_clients(server.server_address[1], plan)
    assert (result.answered, result.faults) == (0, {"ordinary: TimeoutError": 2})
    assert (result.downloads_ok, result.uploads_ok) == (1, 1)
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- end to end (opt-in)


@pytest.mark.skipif(
    os.environ.get("PREFORK_BENCH_SMOKE") != "1" or shutil.which("wrk") is None or not bench.venv_python().exists(),
    reason="a real benchmark run: set PREFORK_BENCH_SMOKE=1 (needs wrk and scripts/.bench-venv)",
)
def test_quick_benchmark_end_to_end(tmp_path):
    """prefork alone, against itself built from HEAD as a baseline, on every kind of case."""
    completed = subprocess.run(
        [str(bench.venv_python()), str(BENCH_PATH), "--quick", "--servers", "prefork", "--baseline", "HEAD",
         "--cases", "hello,post4k,hello-unix,hello-c1000,slow-clients", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout
    baseline = bench.baseline_server("HEAD").name
    for heading in ("== hello:", "== post4k:", "== hello-unix:", "== hello-c1000: hello world, keep-alive, 1000 connections (wrk -t1 -c1000", "== slow-clients:"):
        assert heading in out
    assert all(column in out for column in ("req/s [min-max]", "CPU s", "req/CPU-s", "PSS after MiB", "peak PSS MiB"))
    assert f"prefork / {baseline} = " in out
    assert "bars: 100/100 answered, p99 <= 250 ms" in out
    assert "1 round(s): the [min-max] spreads need 3 or more" in out
    document = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    for case in ("hello", "post4k", "hello-unix", "hello-c1000"):
        for server in ("prefork", baseline):
            summary = document["summary"][case][server]
            assert summary["rps"]["median"] > 0 and summary["errors"] == 0, (case, server, summary)
            assert summary["requests_per_cpu_s"] > 0 and summary["pss_after_mib"] > 0, (case, server, summary)
    slow = next(run for run in document["runs"] if run["case"] == "slow-clients" and run["server"] == "prefork")
    assert (slow["slow"]["downloads_ok"], slow["slow"]["uploads_ok"], len(slow["slow"]["latencies_ms"])) == (40, 40, 100), slow
    assert slow["usage"]["peak_pss_mib"] > 0
    assert document["idle_memory"]["prefork"][0]["processes"] >= 3  # arbiter + 2 workers
    assert document["idle_memory"]["prefork"][0]["pss_mib"] > 0
    assert (tmp_path / "bench.png").stat().st_size > 0
