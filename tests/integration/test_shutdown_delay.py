"""--shutdown-delay and --health-path, as a load balancer and an operator see them: after TERM
new connections are still served while the health path says 503, then the usual drain runs;
the health path is answered by the worker, never the app; `prefork status --check` follows.

Real servers on pre-bound sockets, real signals; every wait is bounded.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import APPS, free_port, prefork_command, wait_for
from httpclient import connect, exchange, read_response

DELAY = 3.0
CLI_TIMEOUT = 30


def health(server) -> int:
    return requests.get(server.url + "/healthz", timeout=5).status_code


def check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(prefork_command("status", "--check", "--control-socket", str(path)),
                          cwd=APPS, capture_output=True, text=True, timeout=CLI_TIMEOUT)


@pytest.fixture
def delayed(start_server, tmp_path):
    """``delayed(delay, workers=...)``: a server with the health path, the delay and a control
    socket at a known path."""
    def start(delay: float = DELAY, workers: int = 2, *args: str):
        path = tmp_path / "ctl.sock"
        server = start_server("basic:app", "--health-path", "/healthz", "--shutdown-delay", str(delay),
                              "--control-socket", str(path), *args, workers=workers)
        wait_for(path.exists, 10, message="control socket")
        return server, path
    return start


def test_during_the_delay_new_connections_are_served_and_health_says_503(delayed):
    metrics = free_port()
    server, path = delayed(DELAY, 2, "--metrics-bind", f"127.0.0.1:{metrics}")
    assert health(server) == 200
    assert check(path).returncode == 0
    workers = server.worker_pids()
    sent_term = time.monotonic()
    server.signal(signal.SIGTERM)
    wait_for(lambda: health(server) == 503, 5, message="the health path to say 503")
    served = 0
    while time.monotonic() < sent_term + DELAY - 1.0:  # bounded by the delay
        response = requests.get(server.url + "/pid", timeout=5)  # a new connection each time
        assert response.status_code == 200
        assert int(response.text) in workers  # the same workers, still accepting
        served += 1
    assert served > 0
    result = check(path)
    assert result.returncode == 1
    assert "stopping" in result.stderr
    scrape = requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
    assert "\nprefork_stopping 1\n" in scrape
    assert server.wait_exit(DELAY + 15) == 0
    assert time.monotonic() - sent_term >= DELAY - 0.1
    log = server.log()
    assert log.index("serving 3s more (--shutdown-delay)") < log.index("Shutdown delay over: graceful stop")
    assert "Handling signal: TERM (graceful stop)" not in log  # one TERM, and it started the delay


def test_after_the_delay_the_drain_finishes_requests_and_closes_keep_alive_with_503(delayed):
    server, _ = delayed(1.0, workers=1)
    idle = connect(server.port)
    idle_reader = idle.makefile("rb")
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(idle_reader).status == 200
    server.signal(signal.SIGTERM)
    wait_for(lambda: health(server) == 503, 5, message="the health path to say 503")
    # Accepted during the delay, still running when the drain starts: finished, as today.
    slow: list[int] = []
    request = threading.Thread(target=lambda: slow.append(
        requests.get(server.url + "/sleep?2", timeout=15).status_code))
    request.start()
    server.wait_log("Shutdown delay over", timeout=10)
    server.wait_log("retiring", timeout=10)
    # The retiring worker still answers its open keep-alive connection: 503, then it closes.
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = read_response(idle_reader)
    assert answer.status == 503 and answer.body == b"stopping\n"
    assert answer.header("Connection") == "close"
    assert idle_reader.read() == b""
    request.join(timeout=15)
    assert slow == [200]
    assert server.wait_exit(15) == 0
    idle.close()


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_term_or_an_int_skips_the_delay(delayed, second):
    server, _ = delayed(60.0)
    server.signal(signal.SIGTERM)
    wait_for(lambda: health(server) == 503, 5, message="the health path to say 503")
    started = time.monotonic()
    server.signal(second)
    assert server.wait_exit(15) == 0
    assert time.monotonic() - started < 10  # nowhere near the 60 s delay


def test_the_health_path_is_answered_by_the_worker_not_the_app(start_server):
    server = start_server("basic:app", "--health-path", "/healthz", workers=1)
    # basic:app answers 404 for any path it does not know: a 200 here came from the worker.
    get, head, pipelined_last = exchange(
        server.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", count=3)
    assert (get.status, get.body) == (200, b"ok\n")
    assert head.status == 200 and head.header("Content-Length") == "3"
    assert pipelined_last.header("Connection") == "close"
    assert pipelined_last.body == b"ok\n"
    # Anything else on the path is the app's: a POST, a query of the app's own.
    assert requests.post(server.url + "/healthz", data=b"x", timeout=5).status_code == 404
    assert requests.get(server.url + "/healthz/deep", timeout=5).status_code == 404
    (old,) = exchange(server.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert old.status == 200 and old.header("Connection") == "close"


def test_without_the_setting_the_path_belongs_to_the_app(start_server):
    server = start_server("basic:app", workers=1)
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 404


def test_without_a_delay_health_says_503_during_the_drain(delayed):
    server, _ = delayed(0.0, workers=1)
    idle = connect(server.port)
    reader = idle.makefile("rb")
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(reader).status == 200  # accepted: a keep-alive connection of the worker
    server.signal(signal.SIGTERM)
    server.wait_log("retiring", timeout=10)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(reader).status == 503
    assert server.wait_exit(15) == 0
    idle.close()


def test_status_check_fails_when_no_server_answers(tmp_path):
    result = check(tmp_path / "nothing.sock")
    assert result.returncode == 1
    assert result.stderr.startswith("prefork: error: ")
