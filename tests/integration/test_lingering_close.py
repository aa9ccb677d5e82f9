"""Lingering close: a client still uploading when it gets an early answer (413 for a body over
--limit-request-body) reads that answer, not a reset, because the worker shuts down its side and
reads on, discarding, before it closes (workers/linger.py; nginx's lingering_close). The reading
is bounded: the client's end of stream, 5 s of silence, or --lingering-time in all.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time

import psutil

from conftest import prefork_command, wait_for
from httpclient import connect, upload_outcome

LIMIT = "1000000"
UPLOAD = 20_000_000  # twenty times the limit: still in flight when the 413 is sent
CHUNK = b"x" * 65536


def _post_over_the_limit(port: int) -> int | str:
    return upload_outcome(http.client.HTTPConnection("127.0.0.1", port, timeout=10), "/echo", UPLOAD)


def _read_to_end(sock: socket.socket) -> bytes:
    data = b""
    for _ in range(1000):
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server never closed its side")


def _worker_connections(server, client: socket.socket) -> list:
    """The worker's sockets still connected to this client socket."""
    port = client.getsockname()[1]
    return [c for worker in server.workers() for c in worker.net_connections("tcp")
            if c.raddr and c.raddr.port == port]


def test_http_client_reads_the_413_of_an_upload_over_the_limit(start_server):
    server = start_server("basic:app", "--limit-request-body", LIMIT, workers=1)
    pid = server.worker_pids()
    assert [_post_over_the_limit(server.port) for _ in range(5)] == [413] * 5
    assert server.get("/").status_code == 200 and server.worker_pids() == pid


def test_without_lingering_http_client_sees_a_reset_instead(start_server):
    """What --lingering-time 0 turns off: the close over the unread upload is a reset, which
    http.client reports instead of the 413 (this is why the close lingers by default)."""
    server = start_server("basic:app", "--limit-request-body", LIMIT, "--lingering-time", "0", workers=1)
    outcomes = [_post_over_the_limit(server.port) for _ in range(3)]
    assert any(outcome in ("ConnectionResetError", "BrokenPipeError") for outcome in outcomes), outcomes


def test_the_whole_upload_is_taken_then_the_413_and_a_clean_end(start_server):
    server = start_server("basic:app", "--limit-request-body", LIMIT, workers=1)
    body = 50_000_000
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % body)
        for _ in range(body // len(CHUNK)):  # no reset: the worker reads and discards it all
            sock.sendall(CHUNK)
        sock.sendall(b"x" * (body % len(CHUNK)))
        response = _read_to_end(sock)  # the 413, then EOF: our FIN, not a reset
    assert response.startswith(b"HTTP/1.1 413 "), response[:80]
    assert b"Connection: close\r\n" in response
    assert server.get("/").status_code == 200


def test_a_client_that_never_stops_sending_is_cut_off_after_lingering_time(start_server):
    server = start_server("basic:app", "--limit-request-body", LIMIT, "--lingering-time", "1", workers=1)
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        started = time.monotonic()
        cut_after = None
        for _ in range(100):  # 1 KiB every 50 ms: never silent, never done
            try:
                sock.sendall(b"x" * 1024)
            except OSError:  # the worker closed with bytes unread: a reset
                cut_after = time.monotonic() - started
                break
            time.sleep(0.05)
    assert cut_after is not None, "still lingering after 5 s with --lingering-time 1"
    assert 0.8 <= cut_after <= 3.0, cut_after  # lingered, and no longer than the limit (a tick)


def test_a_silent_client_is_let_go_and_status_shows_it_closing_meanwhile(start_server, tmp_path):
    """A client that read its 413 and neither closes nor sends holds the worker's socket for
    the idle time only (here --lingering-time 2, which caps it); `prefork status` counts it as
    closing meanwhile."""
    path = tmp_path / "ctl.sock"
    server = start_server("basic:app", "--limit-request-body", LIMIT, "--lingering-time", "2",
                          "--control-socket", str(path), workers=1)

    def closing() -> int:
        result = subprocess.run(prefork_command("status", "--json", "--control-socket", str(path)),
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        (worker,) = json.loads(result.stdout)["workers"]
        return worker["connections"]["closing"]

    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 100)
        assert _read_to_end(sock).startswith(b"HTTP/1.1 413 ")
        assert _worker_connections(server, sock), "the worker does not linger on the socket"
        wait_for(lambda: closing() == 1, 1.5, message="status to count one closing connection")
        wait_for(lambda: not _worker_connections(server, sock), 4,
                 message="the worker to close the lingering socket")
        wait_for(lambda: closing() == 0, 1.5, message="status to count it no more")


def test_a_request_refused_for_its_head_lingers_too(start_server):
    """A 431 while the client sends the rest of an oversized head: it reads the 431."""
    server = start_server("basic:app", workers=1)
    with connect(server.port) as sock:
        head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n"
        sock.sendall(head)  # the worker answers after the first 8 KiB field, and reads on
        assert _read_to_end(sock).startswith(b"HTTP/1.1 431 ")


def test_a_timed_out_client_is_not_lingered_on(start_server):
    """408: the client went silent; lingering would only give it more time."""
    server = start_server("basic:app", "--head-timeout", "0.5", workers=1)
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        assert _read_to_end(sock).startswith(b"HTTP/1.1 408 ")
        wait_for(lambda: not _worker_connections(server, sock), 1.5,
                 message="the worker to close the timed-out socket at once")
        assert psutil.pid_exists(server.pid)


def test_a_graceful_stop_waits_for_a_client_still_uploading_into_its_413(start_server):
    """TERM retires the worker while a client sends on after its 413: the worker keeps reading
    (within --graceful-timeout) instead of exiting at once and resetting the upload."""
    server = start_server("basic:app", "--limit-request-body", LIMIT, "--lingering-time", "10", workers=1)
    (worker,) = server.workers()
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")
        server.proc.terminate()  # TERM: a graceful stop
        wait_for(lambda: "retiring" in server.log(), 5, message="the worker to retire")
        for _ in range(20):  # a second more of the upload: taken, not reset
            sock.sendall(b"x" * 1024)
            time.sleep(0.05)
        assert worker.is_running()
    wait_for(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, 10,
             message="the worker to exit once the client is gone")
