"""PEP 3333 end to end, through a real prefork: what the in-process cases in
tests/unit/test_wsgi_*.py cannot show — the real peer and listener addresses, a unix socket,
--threads, a worker that outlives a failing app, sendfile to a TCP client, and wsgiref's
validator around an app in a real worker.

The app is tests/apps/wsgi_cases.py (basic:app for the validator); routes that test close()
log "<name> closed" to the file in $WSGI_CLOSE_LOG.
"""

from __future__ import annotations

import json
import os
import socket

import requests

from httpclient import connect, exchange, read_response

APP = "wsgi_cases:app"
FOLLOWER = b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n"


def get(path: str, method: bytes = b"GET", version: bytes = b"1.1") -> bytes:
    return b"%s %s HTTP/%s\r\nHost: t\r\n\r\n" % (method, path.encode(), version)


def assert_has(environ: dict, expected: dict) -> None:
    assert {key: environ.get(key) for key in expected} == expected


def wire(port: int, data: bytes) -> bytes:
    """Everything the server sends back until it closes the connection."""
    with connect(port) as sock:
        sock.sendall(data)
        return sock.makefile("rb").read()


# -- environ -----------------------------------------------------------------------------------

def test_server_and_remote_addresses(start_server):
    server = start_server(APP, workers=1)
    with connect(server.port) as sock:
        sock.sendall(b"GET /environ HTTP/1.1\r\nHost: t\r\n\r\n")
        environ = json.loads(read_response(sock.makefile("rb")).body)
        assert environ["REMOTE_PORT"] == str(sock.getsockname()[1])
    assert_has(environ, {"SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(server.port), "REMOTE_ADDR": "127.0.0.1"})


def test_unix_socket_takes_server_name_and_port_from_host(start_server, tmp_path):
    path = tmp_path / "app.sock"
    start_server(APP, "-b", f"unix:{path}", workers=1, bind=False)
    for host, name, port in [(b"example.org:9000", "example.org", "9000"), (b"example.org", "example.org", "80"),
                             (b"[2001:db8::1]:81", "[2001:db8::1]", "81"), (None, "localhost", "80")]:
        head = b"Host: %s\r\n" % host if host else b""
        version = b"1.1" if host else b"1.0"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(b"GET /environ HTTP/%s\r\n%s\r\n" % (version, head))
            environ = json.loads(read_response(sock.makefile("rb")).body)
        assert_has(environ, {"SERVER_NAME": name, "SERVER_PORT": port, "REMOTE_ADDR": ""})


def test_multithread_flag_follows_threads(start_server):
    """The flags tell the truth: with --threads the app may run concurrently in one process.
    (wsgi.multiprocess is always true: a reload runs two generations side by side.)"""
    server = start_server(APP, "--threads", "2", workers=1)
    (response,) = exchange(server.port, b"GET /environ HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_has(json.loads(response.body), {"wsgi.multithread": True, "wsgi.multiprocess": True})


# -- the response ------------------------------------------------------------------------------

def test_close_is_called_when_the_app_fails_mid_response(start_server, tmp_path):
    close_log = tmp_path / "closed.log"
    server = start_server(APP, "--log-level", "debug", workers=1, env={"WSGI_CLOSE_LOG": str(close_log)})
    pids = server.worker_pids()
    data = wire(server.port, get("/recorded?name=failing&n=5&size=4&fail=2") + FOLLOWER)
    assert data.endswith(b"\r\n\r\n4\r\nxxxx\r\n4\r\nxxxx\r\n"), "two chunks, then the connection closes"
    assert close_log.read_text().splitlines() == ["failing closed"]
    server.wait_log("RuntimeError: failing: deliberate failure mid-response")
    assert server.get("/").status_code == 200 and server.worker_pids() == pids


def test_file_wrapper_sends_a_real_file_byte_identical(start_server, tmp_path):
    server = start_server(APP, workers=1)
    data = os.urandom(5 * 1024 * 1024 + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    response = requests.get(f"{server.url}/file", params={"kind": "file", "path": str(path)}, timeout=30)
    # sendfile's path knows the size up front; iterating the file would be chunked
    assert response.headers["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in response.headers
    assert response.content == data


# -- PEP 3333 as wsgiref.validate checks it ------------------------------------------------------

def test_validated_app_sees_no_violation_in_any_flow(start_server):
    """basic:app runs inside wsgiref.validate.validator (with its warnings as errors): a
    violation would be a 500 here, or "garbage collected without being closed" in the log."""
    server = start_server("basic:app", workers=1)
    flows = [
        (get("/"), 200), (get("/", b"HEAD"), 200), (get("/stream?3"), 200), (get("/stream?3", b"HEAD"), 200),
        (get("/nope"), 404), (get("/environ", version=b"1.0"), 200), (b"OPTIONS / HTTP/1.1\r\nHost: t\r\n\r\n", 200),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 200),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 200),
        (b"PUT /echo-lines HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\na\nb\nc\n", 200),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi", 200),
    ]
    for request, status in flows:
        with connect(server.port) as sock:
            sock.sendall(request)
            f = sock.makefile("rb")
            response = read_response(f, head_only=request.startswith(b"HEAD"))
            if response.status == 100:
                response = read_response(f)
            assert response.status == status, (request, response.body)
    with connect(server.port) as sock:  # leaving mid-stream: the validator's iterator is closed too
        sock.sendall(get("/stream?200000"))
        sock.recv(4096)
    assert server.get("/").status_code == 200
    log = server.log()
    for complaint in ("AssertionError", "WSGIWarning", "without being closed"):
        assert complaint not in log
