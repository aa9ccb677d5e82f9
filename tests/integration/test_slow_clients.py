"""Slow and hostile clients against a real prefork: they cost a buffer, never a worker, and
every wait they can cause is bounded.

* Request heads are read by the worker's event loop: 500 sockets dribbling partial heads do
  not slow a normal request down, and --head-timeout ends them (408, then close).
* Request bodies are collected by the event loop before the app runs: a stalled body costs a
  buffer, and --body-timeout (per wait, like nginx's client_body_timeout) ends it with a 408.
  With --no-request-buffering the app reads the body itself and a stall holds that worker for
  at most --body-timeout; other workers go on serving meanwhile.
* A client that leaves mid-response or mid-upload costs the worker nothing: it logs at debug
  level, closes the app's iterable and serves the next request (same pid).

Responses a client does not read, and uploads it stalls, are tested in test_buffering.py.
"""

from __future__ import annotations

import resource
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_for
from httpclient import closed_by_peer, connect, read_response

DRIBBLERS = 500
DRIBBLE_INTERVAL = 0.5
FAST = 1.0  # seconds a normal request may take while the dribblers dribble


@pytest.fixture
def many_fds() -> Iterator[None]:
    """500 client sockets here, 500 accepted ones in the workers (which inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * DRIBBLERS + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for {DRIBBLERS} sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def held_connections(server) -> int:
    """Established TCP connections the workers hold."""
    total = 0
    for worker in server.workers():
        total += sum(1 for c in worker.net_connections("tcp") if c.status == "ESTABLISHED")
    return total


def dribble_until_closed(sock: socket.socket, byte: bytes, seconds: float) -> bytes:
    """Send ``byte`` after each 0.2 s without an answer, until the server closes or
    ``seconds`` pass; returns what the server sent."""
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            sock.send(byte)
            continue
        if not data:
            break
        received += data
    return received


def timed_get(server, path: str = "/") -> float:
    start = time.monotonic()
    response = server.get(path, timeout=10)
    assert response.status_code == 200
    return time.monotonic() - start


def test_500_dribbling_heads_do_not_slow_a_normal_request(start_server, many_fds):
    server = start_server("basic:app", "--head-timeout", "60", workers=2)
    socks = []
    stop = threading.Event()

    def dribble() -> None:
        while not stop.wait(DRIBBLE_INTERVAL):
            for sock in socks:
                sock.send(b"abc")  # a growing header value: never a line end

    try:
        for _ in range(DRIBBLERS):
            sock = connect(server.port)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            socks.append(sock)
        wait_for(lambda: held_connections(server) >= DRIBBLERS, 15, interval=0.2,
                 message=f"the workers holding {DRIBBLERS} connections")
        dribbler = threading.Thread(target=dribble, daemon=True)
        dribbler.start()
        durations = []
        for _ in range(6):
            durations.append(timed_get(server))
            time.sleep(DRIBBLE_INTERVAL / 3)  # spread the requests over the dribble rounds
        assert max(durations) < FAST, durations
        stop.set()
        dribbler.join(5)
        # the dribbled bytes were kept: finishing one head gets it answered
        socks[0].sendall(b"\r\n\r\n")
        assert read_response(socks[0].makefile("rb")).status == 200
        assert held_connections(server) >= DRIBBLERS - 1, "the dribblers were dropped early"
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def test_slowloris_head_gets_408_and_close_after_head_timeout(start_server):
    server = start_server("basic:app", "--head-timeout", "1", workers=1)
    with connect(server.port) as sock:
        start = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        received = dribble_until_closed(sock, b"X", 6)  # activity must not extend the deadline
        elapsed = time.monotonic() - start
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"Connection: close" in received
    assert 0.9 < elapsed < 3.5, elapsed


def test_idle_connection_is_closed_after_head_timeout(start_server):
    server = start_server("basic:app", "--head-timeout", "1", workers=1)
    with connect(server.port) as sock:
        sock.settimeout(10)
        assert sock.recv(1) == b"", "closed without a response: no request was ever started"


@pytest.mark.parametrize("option, start, limit, status", [
    ("--limit-request-line", b"GET /", 50, 414),
    ("--limit-request-field-size", b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: ", 64, 431),
])
def test_dribbled_line_over_its_limit_is_refused_without_a_line_end(start_server, option, start, limit, status):
    server = start_server("basic:app", option, str(limit), workers=1)
    with connect(server.port) as sock:
        sock.sendall(start)
        sock.settimeout(0.02)
        sent = len(start)
        data = b""
        while sent < 4 * limit:
            try:
                data = sock.recv(65536)
                break
            except socket.timeout:
                sock.send(b"aaaa")
                sent += 4
        sock.settimeout(5)
        data += sock.recv(65536) if not data else b""
    assert data.startswith(b"HTTP/1.1 %d " % status), data
    assert sent <= len(start) + limit + 8, "refused as soon as the line was over the limit"


def test_head_trickled_after_a_large_start_costs_no_rescan_per_byte(start_server):
    """A head as large as the limits allow (98 fields of 8 KB), then its last line one byte
    per send: each read brings no line end, so only that line is measured. Before, every
    byte rescanned the whole ~800 KB head and one client kept a worker's core busy."""
    server = start_server("basic:app", workers=1)
    worker = server.workers()[0]
    trickled = 4000
    before = sum(worker.cpu_times()[:2])
    with connect(server.port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n"
                     + b"".join(b"X-%02d: %s\r\n" % (n, b"a" * 8150) for n in range(98)) + b"X-Last: ")
        for _ in range(trickled):
            sock.send(b"b")
            time.sleep(0.0002)  # one segment per byte, as a trickling client's
        sock.sendall(b"\r\n\r\n")
        sock.settimeout(10)
        response = read_response(sock.makefile("rb"))
        used = sum(worker.cpu_times()[:2]) - before
    assert response.status == 200
    assert used < 0.3, f"{used:.2f} s of worker CPU for {trickled} trickled bytes"


def _send_lines(sock: socket.socket, lines: list[bytes]) -> None:
    """One segment per line, as a trickling client sends them."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for line in lines:
        sock.send(line)
        time.sleep(0.0002)


def test_a_head_of_many_lines_sent_one_by_one_costs_no_rescan_per_line(start_server):
    """With --limit-request-fields 0 (a ceiling of 32768), a head of 8000 short lines, one
    per segment: the head is parsed when it has doubled since the last parse or ends, not
    at every line end (~0.9 s of CPU here before, and seconds for longer heads)."""
    server = start_server("basic:app", "--limit-request-fields", "0", workers=1)
    worker = server.workers()[0]
    before = sum(worker.cpu_times()[:2])
    with connect(server.port) as sock:
        _send_lines(sock, [b"GET / HTTP/1.1\r\nHost: t\r\n"]
                    + [b"X%05d: v\r\n" % n for n in range(8000)] + [b"\r\n"])
        sock.settimeout(10)
        response = read_response(sock.makefile("rb"))
    used = sum(worker.cpu_times()[:2]) - before
    assert response.status == 200
    assert used < 0.35, f"{used:.2f} s of worker CPU for a head of 8000 lines"


def test_a_head_with_too_many_fields_sent_line_by_line_is_still_refused(start_server):
    """Parsing a head arriving in pieces less often must not let its checks slip: one field
    over --limit-request-fields gets the 431 once the head ends, at the latest."""
    server = start_server("basic:app", "--limit-request-fields", "50", workers=1)
    with connect(server.port) as sock:
        _send_lines(sock, [b"GET / HTTP/1.1\r\nHost: t\r\n"]
                    + [b"X%05d: v\r\n" % n for n in range(50)] + [b"\r\n"])
        sock.settimeout(10)
        response = read_response(sock.makefile("rb"))
    assert response.status == 431


def test_a_graceful_stop_ends_a_slow_head_itself_before_the_arbiter_must_kill(start_server):
    """TERM with a client still trickling its head: the retiring worker answers it 408 and
    exits on its own just before --graceful-timeout, rather than being SIGKILLed by the
    arbiter at the timeout (which cost its exit and its last access-log second)."""
    server = start_server("basic:app", "--graceful-timeout", "2", "--head-timeout", "20", workers=1)
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # never completed
        wait_for(lambda: held_connections(server) == 1, 5, message="the worker to hold the client")
        server.signal(signal.SIGTERM)
        sock.settimeout(10)
        received = b""
        while data := sock.recv(65536):  # bounded by the timeout: the worker closes
            received += data
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert server.wait_exit() == 0
    log = server.log()
    assert "killing" not in log and "SIGKILL" not in log, log


def test_a_graceful_stop_ends_a_body_still_trickling_with_408(start_server):
    """A body that keeps arriving during a graceful stop: each byte would push its I/O
    deadline past the worker's own; it is capped, so the body gets its 408 (a bare close
    before)."""
    server = start_server("basic:app", "--graceful-timeout", "2", "--body-timeout", "30", workers=1)
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nx")
        wait_for(lambda: held_connections(server) == 1, 5, message="the worker to hold the client")
        server.signal(signal.SIGTERM)
        received = dribble_until_closed(sock, b"x", 10)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert server.wait_exit() == 0


def test_stalled_body_costs_a_buffer_and_gets_408_after_body_timeout(start_server):
    server = start_server("basic:app", "--body-timeout", "1", workers=1)
    (pid,) = server.worker_pids()
    with connect(server.port) as stalled:
        start = time.monotonic()
        stalled.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        assert timed_get(server, "/pid") < FAST  # the only worker is not waiting for the body
        answer = read_response(stalled.makefile("rb"))
        assert answer.status == 408 and answer.header("Connection") == "close"
        assert closed_by_peer(stalled)
        assert 1 <= time.monotonic() - start < 1 + 2.5
    assert server.worker_pids() == {pid}


def test_unbuffered_stalled_body_blocks_one_worker_at_most_body_timeout(start_server):
    server = start_server("basic:app", "--body-timeout", "1", "--no-request-buffering", workers=1)
    (pid,) = server.worker_pids()
    with connect(server.port) as stalled:
        start = time.monotonic()
        stalled.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        # the only worker waits in the app for the body: a second client waits too, boundedly
        response = server.get("/pid", timeout=10)
        assert response.status_code == 200 and response.text == str(pid)
        assert time.monotonic() - start < 1 + 2.5
        answer = read_response(stalled.makefile("rb"))
        assert answer.status == 408 and answer.header("Connection") == "close"
        assert closed_by_peer(stalled)
        assert time.monotonic() - start < 1 + 2.5
    assert server.worker_pids() == {pid}


def test_stalled_body_does_not_stop_the_other_workers(start_server):
    server = start_server("basic:app", "--body-timeout", "5", workers=2)
    with connect(server.port) as stalled:
        stalled.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        durations = [timed_get(server) for _ in range(5)]
    assert max(durations) < FAST, durations


@pytest.fixture
def close_log(tmp_path: Path) -> Path:
    return tmp_path / "closed.log"


@pytest.fixture
def cases(start_server, close_log):
    return start_server("wsgi_cases:app", "--log-level", "debug", workers=1,
                        env={"WSGI_CLOSE_LOG": str(close_log)})


@pytest.fixture
def unbuffered_cases(start_server, close_log):
    """The app reads request bodies from the socket (--no-request-buffering)."""
    return start_server("wsgi_cases:app", "--log-level", "debug", "--no-request-buffering",
                        workers=1, env={"WSGI_CLOSE_LOG": str(close_log)})


def closed_events(close_log: Path) -> list[str]:
    return close_log.read_text().splitlines() if close_log.exists() else []


def test_client_leaving_mid_response_closes_the_iterable_and_the_worker_goes_on(cases, close_log):
    (pid,) = cases.worker_pids()
    sock = connect(cases.port)
    sock.sendall(b"GET /recorded?name=big&size=65536&n=4096 HTTP/1.1\r\nHost: t\r\n\r\n")  # 256 MiB
    received = 0
    while received < 8192:
        received += len(sock.recv(8192))
    sock.close()  # unread data: the kernel resets the connection
    wait_for(lambda: closed_events(close_log) == ["big closed"], 10, message="close() of the iterable")
    cases.wait_log("went away")
    assert cases.get("/environ").status_code == 200
    assert cases.worker_pids() == {pid}


def test_client_leaving_mid_upload_closes_the_iterable_and_the_worker_goes_on(unbuffered_cases, close_log):
    cases = unbuffered_cases
    (pid,) = cases.worker_pids()
    sock = connect(cases.port)
    sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n" + b"u" * 200_000)
    f = sock.makefile("rb")
    assert read_response(f, head_only=True).status == 200  # the app is reading the body now
    f.close()  # the socket closes only when its file object does
    sock.close()
    wait_for(lambda: closed_events(close_log) == ["upload closed"], 10, message="close() of the iterable")
    cases.wait_log("went away")
    assert cases.get("/environ").status_code == 200
    assert cases.worker_pids() == {pid}


def test_client_leaving_with_its_unread_body_not_all_sent(start_server):
    """The app answered without reading the body; the client goes away with most of it
    unsent (unbuffered: buffered, the app runs only on a complete body)."""
    server = start_server("basic:app", "--no-request-buffering", workers=1)
    (pid,) = server.worker_pids()
    for _ in range(3):
        with connect(server.port) as sock:
            sock.sendall(b"POST /pid HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\npartial")
            response = read_response(sock.makefile("rb"))
            assert response.body == str(pid).encode() and response.header("Connection") == "close"
    assert server.get("/pid").text == str(pid)
    assert server.worker_pids() == {pid}


def test_a_body_trickled_after_its_response_does_not_hold_the_worker(start_server):
    """Unbuffered, the app answers without reading the body; its client then trickles the
    body a byte at a time, each within --body-timeout. The worker waits for none of it: the
    response says Connection: close, other clients are served meanwhile, and the close
    lingers, so the client's late bytes meet no reset."""
    server = start_server("basic:app", "--no-request-buffering", "--body-timeout", "2", workers=1)
    (pid,) = server.worker_pids()
    with connect(server.port) as trickler:
        trickler.sendall(b"POST /pid HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n")
        response = read_response(trickler.makefile("rb"))
        assert response.body == str(pid).encode() and response.header("Connection") == "close"
        durations = []
        for _ in range(5):
            trickler.sendall(b"x")
            durations.append(timed_get(server, "/pid"))  # the only worker answers at once
        assert max(durations) < FAST, durations
        assert closed_by_peer(trickler)
    assert server.worker_pids() == {pid}


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_unbuffered_body_read_whole_keeps_the_connection_alive(start_server, framing):
    """The app reads the body from the socket (sent only once the app asks for it, with
    100 Continue): the connection carries the next request, as ever."""
    server = start_server("basic:app", "--no-request-buffering", workers=1)
    if framing == "length":
        head, body = b"Content-Length: 10\r\n", b"0123456789"
    else:
        head, body = b"Transfer-Encoding: chunked\r\n", b"5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n"
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n" + head + b"\r\n")
        f = sock.makefile("rb")
        assert read_response(f).status == 100
        sock.sendall(body)
        response = read_response(f)
        assert response.body == b"0123456789" and response.header("Connection") is None
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(f).status == 200
