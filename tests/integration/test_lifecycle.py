"""What an operator sees: worker count, crash recovery, signals, exit codes."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import requests

from conftest import free_port, wait_for
from httpclient import unix_request


def test_exactly_n_workers_run_with_process_titles(start_server):
    server = start_server(workers=3)
    workers = server.workers()
    assert len(workers) == 3
    titles = sorted(" ".join(w.cmdline()).strip() for w in workers)
    assert titles == [f"prefork: worker {n} [basic:app]" for n in (1, 2, 3)]
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


def test_broken_app_exits_nonzero_with_its_error(start_server):
    server = start_server("broken_syntax:app", wait=False)
    code = server.wait_exit(timeout=20)
    assert code != 0
    log = server.log()
    assert "broken_syntax.py" in log and "SyntaxError" in log
    assert "Traceback" not in log


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
