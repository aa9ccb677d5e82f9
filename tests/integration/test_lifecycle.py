"""A server's life as an operator sees it: start (worker count, titles, exit codes of an app that
cannot load), run (a killed or hung worker replaced, TTIN/TTOU, recycling, a crash loop),
hooks, privileges, and stop (TERM, INT, the pidfile)."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest
import requests

from conftest import free_port, wait_for
from httpclient import connect, unix_request
from loadgen import Load


def test_exactly_n_workers_run_with_process_titles(start_server):
    server = start_server(workers=3)
    expected = [f"prefork: worker {n} [basic:app]" for n in (1, 2, 3)]

    def titles() -> list[str]:
        return sorted(" ".join(w.cmdline()).strip() for w in server.workers())

    # A worker sets its title just after the fork: on a loaded machine it can be seen before.
    wait_for(lambda: titles() == expected, 5, message=f"workers titled {expected}")
    assert " ".join(psutil.Process(server.pid).cmdline()).strip() == "prefork: arbiter [basic:app]"
    server.wait_log("Booting worker with pid")
    server.wait_log(f"Listening at: http://127.0.0.1:{server.port} ({server.pid})")


def test_killed_worker_is_replaced_within_two_seconds(start_server):
    server = start_server(workers=2)
    before = server.worker_pids()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    wait_for(lambda: victim not in (pids := server.worker_pids()) and len(pids) == 2, 2,
             message="a replacement worker")
    wait_for(lambda: server.get("/").status_code == 200, 2, message="service after kill")
    assert time.monotonic() - start < 2.5
    server.wait_log(f"Worker (pid: {victim}) was killed by SIGKILL")


def test_term_lets_in_flight_request_finish_then_exits_zero(start_server):
    server = start_server(workers=1)
    result: dict = {}

    def slow_request() -> None:
        result["response"] = server.get("/sleep?1")

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_for(lambda: _busy(server), 5, message="request in flight")
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=15) == 0
    thread.join(timeout=10)
    assert result["response"].status_code == 200
    assert result["response"].text == "slept 1.0\n"


def _busy(server) -> bool:
    """A worker holds an established client connection: the request reached it."""
    for worker in server.workers():
        try:
            if any(c.status == psutil.CONN_ESTABLISHED for c in worker.net_connections("tcp")):
                return True
        except psutil.NoSuchProcess:
            continue
    return False


def test_int_stops_promptly(start_server):
    server = start_server(workers=2)
    workers = server.worker_pids()
    start = time.monotonic()
    server.signal(signal.SIGINT)
    server.wait_exit(timeout=5)
    assert time.monotonic() - start < 3
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in workers)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_a_fast_stop_interrupts_a_request_in_the_app(start_server, sig):
    """INT/QUIT are a fast stop: a worker inside a long request exits at once (the client sees
    the connection close) rather than when the request ends."""
    server = start_server("basic:app", workers=1)
    with connect(server.port) as sock:
        sock.sendall(b"GET /sleep?10 HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: _busy(server), 5, message="the request to reach the worker")
        start = time.monotonic()
        server.signal(sig)
        sock.settimeout(10)
        assert sock.recv(65536) == b""
        assert server.wait_exit(timeout=10) == 0
        assert time.monotonic() - start < 1.5
    log = server.log()
    assert "killing" not in log and "SIGKILL" not in log, log


def test_fast_stop_says_it_kills_a_worker_stuck_in_a_request(start_server):
    """A request that will not be interrupted (its app swallows the stop, as code stuck in a
    C call would) is killed at the fast stop's deadline, and the log says so."""
    server = start_server("lifecycle:app", workers=1)
    stuck = threading.Thread(target=lambda: _try_get(server.url + "/stubborn"), daemon=True)
    stuck.start()
    wait_for(lambda: _busy(server), 5, message="request in flight")
    server.signal(signal.SIGINT)
    server.wait_exit(timeout=10)
    log = server.log()
    assert "Handling signal: INT/QUIT (fast stop)" in log
    assert "Fast stop: killing 1 worker(s) still running after 2s" in log
    assert "Graceful timeout" not in log


def test_broken_app_exits_nonzero_with_its_error(start_server):
    server = start_server("broken_syntax:app", wait=False)
    code = server.wait_exit(timeout=20)
    assert code != 0
    log = server.log()
    assert "broken_syntax.py" in log and "SyntaxError" in log
    assert "Traceback" not in log


def test_an_app_slower_to_load_than_timeout_stops_the_start_with_its_stack(start_server, tmp_path):
    """At start-up a worker aborted while importing the app means none can boot in time: one
    clear line and exit 3, not a retry every 16 s with connections hanging in the backlog."""
    hold = tmp_path / "hold"
    hold.touch()  # the import sleeps while it exists: longer than --timeout
    server = start_server("lifecycle:app", "--timeout", "1", workers=1, env={"BOOT_HOLD": str(hold)},
                          wait=False)
    assert server.wait_exit(timeout=20) == 3
    log = server.log()
    assert "the app took longer than --timeout 1s to load; raise --timeout" in log
    assert "lifecycle.py" in log and "<module>" in log  # the stack of the import it was stuck in
    assert log.count("Booting worker") == 1


def test_missing_module_exits_nonzero(start_server):
    server = start_server("no_such_module:app", wait=False)
    assert server.wait_exit(timeout=20) != 0
    assert "no_such_module" in server.log()


def test_unix_socket_bind_serves_and_is_removed_on_exit(start_server, tmp_path):
    path = tmp_path / "prefork.sock"
    server = start_server("basic:app", "-b", f"unix:{path}", bind=False)
    wait_for(path.exists, 10, message="socket file")
    data = unix_request(str(path), b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"Hello, world!\n")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not path.exists()


def test_ipv6_bind_serves(start_server):
    port = free_port("::1")
    start_server("basic:app", "-b", f"[::1]:{port}", bind=False)
    response = wait_for(lambda: _try_get(f"http://[::1]:{port}/"), 10, message="IPv6 answer")
    assert response.text == "Hello, world!\n"


def _try_get(url: str):
    try:
        return requests.get(url, timeout=2)
    except requests.RequestException:
        return None


# -- scale, recycle, recover, hooks -------------------------------------------------------------

def test_hung_worker_is_aborted_with_its_stack_logged_and_replaced(start_server):
    server = start_server("lifecycle:app", "--timeout", "2", workers=1)
    (hung_pid,) = server.worker_pids()
    start = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        server.get("/hang", timeout=30)
    assert time.monotonic() - start > 2
    new_pids = server.wait_workers(1)
    assert hung_pid not in new_pids
    assert server.get("/").status_code == 200
    log = server.log()
    assert f"WORKER TIMEOUT (pid: {hung_pid})" in log
    assert "lifecycle.py" in log and "in app" in log  # faulthandler's frame for the sleeping app
    assert f"Worker (pid: {hung_pid}) was aborted after its heartbeat timed out" in log


def test_ttin_and_ttou_change_the_worker_count(start_server):
    server = start_server(workers=2)
    server.signal(signal.SIGTTIN)
    server.wait_workers(3)
    server.signal(signal.SIGTTIN)
    server.wait_workers(4)
    for _ in range(5):
        server.signal(signal.SIGTTOU)
        time.sleep(0.1)
    server.wait_workers(1)  # never below one
    assert server.get("/").status_code == 200


@pytest.mark.parametrize("threads", ["1", "4"])
def test_max_requests_recycles_workers_without_failures(start_server, threads):
    server = start_server("lifecycle:app", "--threads", threads, "--max-requests", "50",
                          "--max-requests-jitter", "10", workers=2)
    first = server.worker_pids()
    with Load(server.url, keepalive_clients=3, close_clients=1) as load:
        load.wait_successes(400, timeout=30)
    assert load.result.failed == 0, load.result.summary()
    assert not (server.wait_workers(2) & first)
    assert "(--max-requests)" in server.log()
    # a retiring worker takes what is queued from its loop, then closes the listener: never
    # an accept() on a listener it closed already
    assert "accept() failed" not in server.log()


def test_max_worker_memory_recycles_a_growing_worker(start_server):
    server = start_server("lifecycle:app", "--max-worker-memory", "80", workers=1)
    (first,) = server.worker_pids()
    with Load(server.url, keepalive_clients=2, close_clients=1) as load:
        load.wait_successes(10)
        for _ in range(12):  # 12 x 8 MiB pushes it past 80 MiB
            assert server.get("/grow").status_code == 200
        load.wait_successes(load.result.succeeded + 20)
    assert load.result.failed == 0, load.result.summary()
    wait_for(lambda: first not in server.worker_pids(), 10, message="recycled worker")
    assert "(--max-worker-memory)" in server.log()


def test_crash_loop_backs_off_instead_of_fork_bombing(start_server, tmp_path):
    marker = tmp_path / "crash"
    server = start_server("lifecycle:app", workers=2, env={"BOOT_MARKER": str(marker)})
    marker.touch()  # from now on, a new worker dies while importing the app
    for pid in server.worker_pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(4)
    boots = server.log().count("Booting worker")
    assert boots <= 2 + 8, f"{boots} workers spawned in 4 s"
    assert "next attempt in" in server.log()
    assert server.proc.poll() is None  # it keeps trying, it does not give up
    marker.unlink()
    wait_for(lambda: _answers(server), 30, message="recovery after the crash loop")


def _answers(server) -> bool:
    try:
        return server.get("/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_pidfile_is_written_and_removed(start_server, tmp_path):
    pidfile = tmp_path / "run" / "prefork.pid"
    pidfile.parent.mkdir()
    server = start_server("basic:app", "--pid", str(pidfile))
    assert int(pidfile.read_text()) == server.pid
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not pidfile.exists()
    assert list(pidfile.parent.iterdir()) == []  # no temporary file left behind


def test_hooks_run_in_order_and_a_failing_hook_is_only_logged(start_server, tmp_path):
    trace = tmp_path / "hooks.log"
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(f'''
TRACE = {str(trace)!r}

def _note(name):
    with open(TRACE, "a") as f:
        f.write(name + "\\n")

def on_starting(server): _note("on_starting")
def when_ready(server): _note("when_ready")
def on_reload(server): _note("on_reload")
def pre_fork(server, worker): _note("pre_fork")
def post_fork(server, worker): _note("post_fork")
def post_worker_init(worker): _note("post_worker_init")
def pre_request(worker, req): _note("pre_request " + req.path)
def post_request(worker, req, environ, resp): _note("post_request " + str(resp.status_code))
def worker_exit(server, worker): _note("worker_exit")
def on_exit(server):
    _note("on_exit")
    raise RuntimeError("hook failure on purpose")
''')
    server = start_server("basic:app", "-c", str(conf), workers=1)
    assert server.get("/pid").status_code == 200
    server.signal(signal.SIGHUP)
    server.wait_log("Reload complete: generation 2 serving", timeout=20)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    lines = trace.read_text().splitlines()
    assert lines[:3] == ["on_starting", "when_ready", "pre_fork"]  # gunicorn's order
    for expected in ("post_fork", "post_worker_init", "pre_request /pid",
                     "post_request 200", "on_reload", "worker_exit", "on_exit"):
        assert expected in lines
    assert "Exception in on_exit hook" in server.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_workers_drop_privileges_to_user_and_group(start_server):
    # --preload: the arbiter (root) imports the app; here the interpreter itself lives under
    # /root, which "nobody" may not read, so a worker could not import modules on its own.
    server = start_server("basic:app", "-u", "nobody", "-g", "nogroup", "--preload", workers=2)
    nobody = psutil.Process(server.pid).uids().real  # the arbiter stays root
    assert nobody == 0
    for worker in server.workers():
        assert worker.uids().effective == 65534
        assert worker.gids().effective == 65534
    assert server.get("/").status_code == 200
