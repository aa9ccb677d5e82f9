"""--threads: the event loop keeps the I/O, a pool runs the app; what a client sees."""

from __future__ import annotations

import signal
import threading
import time

import requests

from httpclient import exchange
from loadgen import Load


def _parallel_gets(url: str, count: int) -> list[requests.Response]:
    results: list[requests.Response] = []
    lock = threading.Lock()

    def fetch() -> None:
        response = requests.get(url, timeout=20)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=fetch) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_one_worker_runs_requests_in_parallel_threads(start_server):
    server = start_server("basic:app", "--threads", "4", workers=1)
    start = time.monotonic()
    results = _parallel_gets(server.url + "/sleep?0.5", 4)
    elapsed = time.monotonic() - start
    assert [r.status_code for r in results] == [200] * 4
    assert elapsed < 1.5, f"4 x 0.5 s requests took {elapsed:.2f}s on 4 threads"


def test_environ_says_multithread(start_server):
    server = start_server("basic:app", "--threads", "2", workers=1)
    assert server.get("/environ").json()["wsgi.multithread"] is True


def test_keep_alive_and_pipelining_work_with_threads(start_server):
    server = start_server("basic:app", "--threads", "3", workers=1)
    data = b"".join(b"GET /stream?%d HTTP/1.1\r\nHost: t\r\n\r\n" % n for n in (1, 2, 3))
    responses = exchange(server.port, data, count=3)
    assert [r.body.count(b"\n") for r in responses] == [1, 2, 3]
    with requests.Session() as session:
        ports = {session.get(server.url + "/environ", timeout=10).json()["REMOTE_PORT"] for _ in range(5)}
    assert len(ports) == 1


def test_idle_connections_do_not_take_threads(start_server):
    server = start_server("basic:app", "--threads", "2", workers=1)
    import socket

    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    try:
        for sock in idle:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # a head that never completes
        start = time.monotonic()
        assert server.get("/").status_code == 200
        assert time.monotonic() - start < 1
    finally:
        for sock in idle:
            sock.close()


def test_hup_with_threads_fails_no_request(start_server):
    server = start_server("lifecycle:app", "--threads", "4", workers=2)
    with Load(server.url, keepalive_clients=4, close_clients=2) as load:
        load.wait_successes(50)
        for generation in (2, 3, 4):
            server.signal(signal.SIGHUP)
            server.wait_log(f"Reload complete: generation {generation} serving", timeout=20)
        load.wait_successes(load.result.succeeded + 50)
    assert load.result.failed == 0, load.result.summary()


def test_app_error_in_a_thread_gives_500_and_the_worker_lives(start_server):
    server = start_server("basic:app", "--threads", "2", workers=1)
    pids = server.worker_pids()
    assert server.get("/error").status_code == 500
    assert server.get("/").status_code == 200
    assert server.worker_pids() == pids
