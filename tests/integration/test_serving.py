"""What a client sees from a running prefork: requests, bodies, keep-alive, pipelining, errors."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time

import requests

from conftest import prefork_command, wait_for
from httpclient import closed_by_peer, connect, exchange, read_response


def test_get_answers_hello(start_server):
    server = start_server()
    response = server.get("/")
    assert response.status_code == 200
    assert response.text == "Hello, world!\n"
    assert response.headers["Content-Length"] == "14"
    assert response.headers["Server"] == "prefork"
    assert "Date" in response.headers


def test_post_body_is_echoed(start_server):
    server = start_server()
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    response = requests.post(server.url + "/echo", data=payload, timeout=10)
    assert response.status_code == 200
    assert response.content == payload


def test_chunked_upload_is_decoded(start_server):
    server = start_server()
    parts = [b"first part\n", b"", b"x" * 100_000, b"last\n"]
    response = requests.post(server.url + "/echo", data=iter(parts), timeout=10)
    assert response.status_code == 200
    assert response.content == b"".join(parts)


def test_wsgi_input_iterates_lines_and_stops_at_body_end(start_server):
    server = start_server()
    body = b"one\ntwo\nthree"
    data = (b"POST /echo-lines HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
            b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" % (len(body), body))
    first, second = exchange(server.port, data, count=2)
    assert first.status == 200 and first.body == b'["one\\n", "two\\n", "three"]'
    assert second.status == 200 and second.body == b"Hello, world!\n"


def test_streamed_response_is_chunked(start_server):
    server = start_server()
    (response,) = exchange(server.port, b"GET /stream?3 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.chunked
    assert response.body == b"chunk 0\nchunk 1\nchunk 2\n"
    streamed = server.get("/stream?50", stream=True)
    assert b"".join(streamed.iter_content(None)) == b"".join(b"chunk %d\n" % i for i in range(50))


def test_http10_streamed_response_is_close_delimited(start_server):
    server = start_server()
    (response,) = exchange(server.port, b"GET /stream?2 HTTP/1.0\r\n\r\n")
    assert not response.chunked
    assert response.header("Connection") == "close"
    assert response.body == b"chunk 0\nchunk 1\n"


def test_keep_alive_connection_serves_many_requests(start_server):
    server = start_server()
    with connect(server.port) as sock:
        f = sock.makefile("rb")
        for _ in range(5):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            response = read_response(f)
            assert response.status == 200 and response.header("Connection") is None
    with requests.Session() as session:
        ports = set()
        for _ in range(3):
            response = session.get(server.url + "/environ", timeout=10)
            ports.add(response.json()["REMOTE_PORT"])
        assert len(ports) == 1, "requests' pooled connection was not reused"


def test_pipelined_requests_are_answered_in_order(start_server):
    server = start_server()
    data = b"".join(b"GET /stream?%d HTTP/1.1\r\nHost: t\r\n\r\n" % n for n in (1, 2, 3))
    data += b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    responses = exchange(server.port, data, count=4)
    assert [r.body.count(b"\n") for r in responses[:3]] == [1, 2, 3]
    assert responses[3].header("Connection") == "close"


def _segments_in(port: int, request: bytes) -> tuple[int, bytes]:
    """TCP segments a client received over one whole `Connection: close` exchange (the
    kernel's tcpi_segs_in), and everything it read."""
    with connect(port) as sock:
        sock.sendall(request)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        segs_in = struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256),
                                     TCPI_SEGS_IN)[0]
    return segs_in, bytes(received)


#: Offset of tcpi_segs_in in Linux's struct tcp_info (since 4.2).
TCPI_SEGS_IN = 140


def test_a_closing_response_leaves_with_its_fin(start_server):
    """`Connection: close` (nginx's default to an upstream): the response and the FIN share a
    segment. A worker that cannot close at once (--threads: the loop takes the connection
    back from a pool thread) sends the FIN on its own: one segment more, same bytes."""
    request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    plain = start_server(workers=1)
    threaded = start_server("basic:app", "--threads", "2", workers=1)
    together = [_segments_in(plain.port, request) for _ in range(5)]
    apart = [_segments_in(threaded.port, request) for _ in range(5)]
    assert {body for _, body in together} == {body for _, body in apart}
    assert len({body for _, body in together}) == 1 and b"Hello, world!" in together[0][1]
    assert max(n for n, _ in together) == min(n for n, _ in apart) - 1


def test_a_closing_response_is_whole_when_bytes_stay_unread(start_server):
    """Closing over bytes the client sent and we never read is a reset, and a reset discards
    what the kernel still holds: such a response is not held for the FIN. Here the app does
    not read a 4 MiB body (--no-request-buffering), and bytes follow a request."""
    server = start_server("basic:app", "--no-request-buffering", workers=1)
    body = b"x" * (4 << 20)
    post = b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    pipelined = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n"
    for request in (post + body, pipelined):
        with connect(server.port) as sock:
            try:
                sock.sendall(request)
            except ConnectionResetError:
                pass  # the server closed before taking the whole body: expected
            response = read_response(sock.makefile("rb"))
        assert response.status == 200 and response.body == b"Hello, world!\n"


def test_a_burst_of_new_connections_does_not_starve_a_client_already_served(start_server):
    """New connections are served as they are accepted, so an accept loop over a queued burst
    of slow requests would make a connection the worker already has wait for all of them.
    Accepting stops after a short turn: the waiting client is served within a request or two."""
    server = start_server(workers=1)
    with connect(server.port) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        replies = client.makefile("rb")
        assert read_response(replies).status == 200  # accepted, served, idle now
        burst = [connect(server.port) for _ in range(10)]
        try:
            for sock in burst:  # 10 x 0.1 s of app time, queued at once
                sock.sendall(b"GET /sleep?0.1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            started = time.monotonic()
            client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(replies).status == 200
            waited = time.monotonic() - started
            assert all(read_response(sock.makefile("rb")).status == 200 for sock in burst)
        finally:
            for sock in burst:
                sock.close()
    assert waited < 0.45, f"the served client waited {waited:.2f} s behind the burst"


def _pid_over(sock: socket.socket) -> int:
    sock.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
    return int(read_response(sock.makefile("rb")).body)


def test_a_new_client_is_served_by_an_idle_worker_while_a_peer_runs_a_long_request(start_server, tmp_path):
    """Accept balancing: worker B holds more idle keep-alive connections than worker A, so B
    would leave new connections to A; but A is inside a long request and cannot accept. B
    must take the new client at once rather than make it wait for A's app."""
    control = tmp_path / "ctl.sock"
    server = start_server("basic:app", "--keep-alive", "30", "--control-socket", str(control),
                          workers=2)

    def workers() -> list[dict]:
        result = subprocess.run(prefork_command("status", "--json", "--control-socket", str(control)),
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["workers"]

    def status(pid: int) -> dict:
        (worker,) = [w for w in workers() if w["pid"] == pid]
        return worker

    wait_for(lambda: [w["state"] for w in workers()] == ["ready", "ready"], 10,
             message="both workers to accept (and balance against each other)")
    held: dict[int, list[socket.socket]] = {}
    try:
        for _ in range(40):  # bounded: until both workers hold connections, one at least three
            sock = connect(server.port)
            held.setdefault(_pid_over(sock), []).append(sock)
            counts = sorted(len(socks) for socks in held.values())
            if len(counts) == 2 and counts[1] >= 3:
                break
        assert len(held) == 2, "both workers took connections"
        a, b = sorted(held, key=lambda pid: len(held[pid]))
        while len(held[a]) > 1:
            held[a].pop().close()
        while len(held[b]) > 3:
            held[b].pop().close()
        for pid in (a, b):
            wait_for(lambda: status(pid)["connections"]["idle"] == len(held[pid]), 5,
                     message="the workers to close the connections let go")
        # A's one connection runs a slow request; B, idle, holds three connections
        held[a][0].sendall(b"GET /sleep?5 HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: (status(a)["request_age"] or 0) > 0.2, 5,
                 message="worker A to be inside its request")
        started = time.monotonic()
        with connect(server.port) as sock:
            answered_by = _pid_over(sock)
        assert answered_by == b
        assert time.monotonic() - started < 2.0
    finally:
        for socks in held.values():
            for sock in socks:
                sock.close()


def test_http10_closes_unless_keep_alive_requested(start_server):
    server = start_server()
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        response = read_response(sock.makefile("rb"))
        assert response.header("Connection") == "close"
        assert closed_by_peer(sock)
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        f = sock.makefile("rb")
        assert read_response(f).header("Connection") == "keep-alive"
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert read_response(f).status == 200


def test_head_has_headers_but_no_body(start_server):
    server = start_server()
    with connect(server.port) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        f = sock.makefile("rb")
        head = read_response(f, head_only=True)
        assert head.status == 200 and head.header("Content-Length") == "14"
        follow = read_response(f)  # the next response starts right after the head
        assert follow.body == b"Hello, world!\n"


def test_expect_100_continue_is_sent_when_the_app_reads(start_server):
    server = start_server()
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        f = sock.makefile("rb")
        interim = read_response(f)
        assert interim.status == 100
        sock.sendall(b"hello")
        final = read_response(f)
        assert final.status == 200 and final.body == b"hello"


def test_app_exception_gives_500_and_worker_keeps_serving(start_server):
    server = start_server(workers=1)
    pids_before = server.worker_pids()
    response = server.get("/error")
    assert response.status_code == 500
    assert "deliberate failure" not in response.text  # no traceback to the client
    assert server.get("/").status_code == 200
    assert server.worker_pids() == pids_before
    server.wait_log("RuntimeError: deliberate failure for the test")


def test_malformed_request_gets_400_and_connection_closed(start_server):
    server = start_server()
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        f = sock.makefile("rb")
        response = read_response(f)
        assert response.status == 400
        assert response.header("Connection") == "close"
        assert f.read() == b"", "the request after a bad one must never be answered"
    assert server.get("/").status_code == 200


def test_idle_keep_alive_connection_is_closed_after_timeout(start_server):
    server = start_server("basic:app", "--keep-alive", "1")
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(sock.makefile("rb"))
        assert closed_by_peer(sock, timeout=5)


def test_environ_follows_pep3333(start_server):
    server = start_server()
    response = server.get("/environ", params={"a": "1 2"}, headers={"X-Custom": "v", "X_Spoof": "no"})
    environ = response.json()
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["PATH_INFO"] == "/environ"
    assert environ["QUERY_STRING"] == "a=1+2"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == str(server.port)
    assert environ["HTTP_X_CUSTOM"] == "v"
    assert "HTTP_X_SPOOF" not in environ
    assert environ["wsgi.multiprocess"] is True and environ["wsgi.multithread"] is False
    assert environ["wsgi.url_scheme"] == "http"


def test_percent_encoded_path_is_decoded_latin1(start_server):
    server = start_server()
    (response,) = exchange(server.port, b"GET /%65nviron HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.status == 200  # /%65nviron is /environ


def test_connection_reset_by_client_does_not_hurt_the_worker(start_server):
    server = start_server(workers=1)
    pids = server.worker_pids()
    for _ in range(20):
        sock = connect(server.port)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\npartial")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    assert server.get("/").status_code == 200
    assert server.worker_pids() == pids
