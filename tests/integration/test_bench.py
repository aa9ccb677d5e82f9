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
import subprocess
import sys
import textwrap
import threading
import time
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


def test_fairness_with_no_connections_is_unknown():
    assert bench.compute_fairness({}, 100.0, 0) is None


@pytest.mark.parametrize(
    ("fairness", "case_name", "expected"),
    [
        (bench.Fairness(3, 10.5, 12, 32), "hello", "3/10.5/12"),
        (bench.Fairness(0, 0, 3000, 32), "hello", "0/0/3000"),
        (bench.Fairness(1, 1, 1, 500), "hello", "n/a (server closes: 500 conns)"),
        (bench.Fairness(1, 1, 1, 33), "hello", "n/a (server closes: 33 conns)"),
        (bench.Fairness(0, 1, 1, 32), "hello", "0/1/1"),
        (bench.Fairness(3, 4, 5, 32), "hello-close", "n/a (close)"),
        (None, "hello", "-"),
    ],
)
def test_fairness_column(fairness, case_name, expected):
    assert bench.format_fairness(fairness, bench.CASES_BY_NAME[case_name]) == expected


# ---------------------------------------------------------------- ratios and summaries


@pytest.mark.parametrize(
    ("rps", "expected"),
    [
        ({"prefork": 1000.0, "gunicorn": 100.0, "granian": 2000.0}, {"gunicorn": 10.0, "granian": 0.5}),
        ({"prefork": 1000.0, "uwsgi": None}, {"uwsgi": None}),
        ({"prefork": 1000.0, "uwsgi": 0.0}, {"uwsgi": None}),
        ({"prefork": None, "gunicorn": 100.0}, {"gunicorn": None}),
        ({"gunicorn": 100.0, "waitress": 50.0}, {"gunicorn": None, "waitress": None}),
    ],
)
def test_ratio_is_prefork_over_peer(rps, expected):
    assert bench.ratios(rps) == pytest.approx(expected)


def test_ratio_line_reads_prefork_over_peer():
    line = bench.format_ratio_line({"gunicorn": 12.3, "uwsgi": None})
    assert line == "prefork / gunicorn = 12.30x   prefork / uwsgi = n/a"


def _run(rps: float, *, p99: float = 2.0, errors: int = 0, cpu: float = 1.0, fairness=None, error=None):
    if error:
        return bench.RunResult(server="s", case="hello", round=0, command=[], error=error)
    wrk = bench.WrkResult(
        requests=int(rps * 5), duration_s=5.0, rps=rps, p50_ms=1.0, p90_ms=1.5, p99_ms=p99, max_ms=9.0,
        errors={"connect": 0, "read": errors, "write": 0, "status": 0, "timeout": 0}, bytes_per_response=100.0,
    )
    usage = bench.Usage(cpu_s=cpu, peak_rss_mib=50.0, processes=3)
    return bench.RunResult(server="s", case="hello", round=0, command=[], wrk=wrk, usage=usage, fairness=fairness)


def test_summary_takes_medians_and_adds_errors():
    runs = [
        _run(100.0, p99=3.0, errors=1, fairness=bench.Fairness(5, 10, 12, 32)),
        _run(300.0, p99=1.0, errors=2, fairness=bench.Fairness(7, 11, 20, 32)),
        _run(200.0, p99=2.0, errors=0, fairness=bench.Fairness(6, 12, 15, 32)),
    ]
    summary = bench.summarize(runs)
    assert (summary.rps, summary.p99_ms, summary.errors, summary.failures) == (200.0, 2.0, 3, 0)
    assert summary.error_kinds == {"read": 3}
    assert summary.requests == 500 + 1500 + 1000
    assert summary.requests_per_cpu_s == pytest.approx((500 + 1500 + 1000) / 3.0)
    assert (summary.fairness.min, summary.fairness.median, summary.fairness.max) == (5, 11, 20)


def test_summary_counts_failed_runs_and_keeps_the_reason():
    summary = bench.summarize([_run(100.0), _run(0, error="ServerFailed: exited with code 1")])
    assert (summary.runs, summary.failures, summary.rps) == (2, 1, 100.0)
    assert summary.first_error == "ServerFailed: exited with code 1"


def test_summary_of_only_failures_has_no_numbers():
    summary = bench.summarize([_run(0, error="ServerFailed: boom")])
    assert (summary.rps, summary.cpu_s, summary.fairness, summary.requests_per_cpu_s) == (None, None, None, None)


def test_case_table_shows_every_server_and_the_ratios():
    summaries = {
        "prefork": bench.summarize([_run(1000.0)]),
        "gunicorn": bench.summarize([_run(100.0)]),
        "uwsgi": bench.summarize([_run(0, error="ServerFailed: no answer")]),
    }
    table = bench.format_case_table(bench.CASES_BY_NAME["hello"], summaries, rounds=1, duration_s=5)
    lines = table.splitlines()
    assert lines[0].startswith("== hello:")
    assert lines[1].split()[:2] == ["server", "req/s"]
    assert lines[2].split()[:2] == ["prefork", "1,000"]
    assert "failed: ServerFailed: no answer" in lines[4]
    assert lines[-1] == "prefork / gunicorn = 10.00x   prefork / uwsgi = n/a"


def test_case_table_says_when_req_s_includes_failed_responses():
    summaries = {"prefork": bench.summarize([_run(1000.0, errors=7)]), "gunicorn": bench.summarize([_run(100.0)])}
    table = bench.format_case_table(bench.CASES_BY_NAME["hello"], summaries, rounds=1, duration_s=5)
    assert "  ! prefork: 7 errors (read 7) in 5,000 requests; its req/s counts failed responses too" in table.splitlines()
    assert "! gunicorn" not in table


def test_io_case_names_gunicorns_worker_type():
    assert bench.server_label("gunicorn", bench.CASES_BY_NAME["io"]) == "gunicorn (gthread)"
    assert bench.server_label("gunicorn", bench.CASES_BY_NAME["hello"]) == "gunicorn"


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
    for bad in (["--servers", "nginx"], ["--cases", ""], ["--duration", "0"], ["--rounds", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


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
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FixedResponse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    case = bench.dataclasses.replace(bench.CASES_BY_NAME[case_name], connections=2)
    try:
        result = bench.run_wrk(case, server.server_address[1], duration_s=1)
    finally:
        server.shutdown()
        server.server_close()
    assert result.requests > 0
    assert result.error_total == 0  # for post4k: every POST body arrived whole (else 400 -> status error)
    assert result.p50_ms <= result.p99_ms <= result.max_ms


# ---------------------------------------------------------------- end to end (opt-in)


@pytest.mark.skipif(
    os.environ.get("PREFORK_BENCH_SMOKE") != "1" or shutil.which("wrk") is None or not bench.venv_python().exists(),
    reason="a real benchmark run: set PREFORK_BENCH_SMOKE=1 (needs wrk and scripts/.bench-venv)",
)
def test_quick_benchmark_end_to_end(tmp_path):
    completed = subprocess.run(
        [str(bench.venv_python()), str(BENCH_PATH), "--quick", "--servers", "prefork,gunicorn",
         "--cases", "hello,post4k", "--results-dir", str(tmp_path), "--skip-setup"],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    document = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    printed = completed.stdout.splitlines()
    for case in ("hello", "post4k"):
        summary = document["summary"][case]["prefork"]
        assert summary["rps"] > 0 and summary["errors"] == 0, summary
        # The printed ratio is the recorded req/s of prefork over gunicorn's, for this case.
        rps = {server: document["summary"][case][server]["rps"] for server in ("prefork", "gunicorn")}
        assert rps["gunicorn"] > 0, document["summary"][case]["gunicorn"]
        assert bench.format_ratio_line(bench.ratios(rps)) in printed, case
    assert document["idle_memory"]["prefork"][0]["processes"] >= 3  # arbiter + 2 workers
    assert (tmp_path / "bench.png").stat().st_size > 0
