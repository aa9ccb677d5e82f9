"""What goes on the wire for what an application returns: start_response checks, exc_info,
write(), close(), Content-Length framing, HEAD / 1xx / 204 / 304, Date and Server, and
wsgi.file_wrapper — all against a real prefork, read from raw sockets.

The app is tests/apps/wsgi_cases.py; routes that test close() log "<name> closed" to the file
in $WSGI_CLOSE_LOG.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from conftest import wait_for
from httpclient import connect, exchange, read_response

APP = "wsgi_cases:app"
FOLLOWER = b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture
def close_log(tmp_path: Path) -> Path:
    return tmp_path / "closed.log"


@pytest.fixture
def server(start_server, close_log):
    return start_server(APP, "--log-level", "debug", workers=1, env={"WSGI_CLOSE_LOG": str(close_log)})


def events(close_log: Path) -> list[str]:
    return close_log.read_text().splitlines() if close_log.exists() else []


def wire(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Everything the server sends back until it closes the connection."""
    with connect(port, timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def get(path: str, method: bytes = b"GET", version: bytes = b"1.1") -> bytes:
    return b"%s %s HTTP/%s\r\nHost: t\r\n\r\n" % (method, path.encode(), version)


# -- start_response ----------------------------------------------------------------------------

BAD_HEADER_KINDS = ["crlf-value", "lf-value", "cr-value", "nul-value", "crlf-name", "colon-name",
                    "space-name", "empty-name", "non-latin1-value", "bytes-value", "bad-length"]


@pytest.mark.parametrize("kind", BAD_HEADER_KINDS)
def test_bad_response_header_is_500_and_never_reaches_the_wire(server, kind):
    data = wire(server.port, get(f"/bad-header?kind={kind}") + FOLLOWER)
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert data.count(b"HTTP/1.1") == 1, "the connection must close after the 500"
    for fragment in (b"evil", b"Set-Cookie", b"X-Injected", b"X Injected"):
        assert fragment not in data
    server.wait_log("invalid ")


def test_bad_status_is_500_and_never_reaches_the_wire(server):
    data = wire(server.port, get("/bad-status"))
    assert data.startswith(b"HTTP/1.1 500 ") and b"evil" not in data


def test_exc_info_replaces_headers_not_yet_sent(server):
    (response,) = exchange(server.port, get("/exc-before"))
    assert response.status == 503 and response.body == b"replaced\n"
    assert response.header("X-Second") == "1" and response.header("X-First") is None


def test_exc_info_after_the_head_was_sent_is_re_raised(server, close_log):
    data = wire(server.port, get("/exc-after") + FOLLOWER)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
    assert body == b"8\r\npartial \r\n", "cut short: no last chunk, no second response"
    assert events(close_log) == ["exc_info re-raised"]


def test_second_start_response_without_exc_info_is_refused(server, close_log):
    (response,) = exchange(server.port, get("/twice"))
    assert response.status == 200 and response.body == b"ok\n"
    assert events(close_log) == ["second call refused"]


def test_write_callable_alone_and_mixed_with_the_iterable(server, close_log):
    with connect(server.port) as sock:
        sock.sendall(get("/write") + get("/write-mixed") + FOLLOWER)
        f = sock.makefile("rb")
        written = read_response(f)
        assert written.chunked and written.body == b"one two\n"
        mixed = read_response(f)
        assert mixed.chunked and mixed.body == b"written then iterated\n"
        assert read_response(f).status == 200
    assert events(close_log) == ["write-mixed closed"]


# -- close() -----------------------------------------------------------------------------------

def test_close_is_called_after_a_complete_response(server, close_log):
    with connect(server.port) as sock:
        sock.sendall(get("/recorded?name=ok&n=3&size=4") + FOLLOWER)
        f = sock.makefile("rb")
        assert read_response(f).body == b"xxxx" * 3
        assert read_response(f).status == 200
    assert events(close_log) == ["ok closed"]


def test_close_is_called_when_the_app_fails_mid_response(server, close_log):
    pids = server.worker_pids()
    data = wire(server.port, get("/recorded?name=failing&n=5&size=4&fail=2") + FOLLOWER)
    assert data.endswith(b"\r\n\r\n4\r\nxxxx\r\n4\r\nxxxx\r\n"), "two chunks, then the connection closes"
    assert events(close_log) == ["failing closed"]
    server.wait_log("RuntimeError: failing: deliberate failure mid-response")
    assert server.get("/").status_code == 200 and server.worker_pids() == pids


def test_failure_before_the_first_chunk_is_a_500(server, close_log):
    data = wire(server.port, get("/recorded?name=early&n=5&fail=0"))
    assert data.startswith(b"HTTP/1.1 500 ")
    assert events(close_log) == ["early closed"]


# -- Content-Length ----------------------------------------------------------------------------

def test_body_shorter_than_its_content_length_closes_the_connection(server, close_log):
    data = wire(server.port, get("/length?declared=100&sent=10") + FOLLOWER)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Length: 100" in head and body == b"y" * 10
    assert events(close_log) == ["declared closed"]
    server.wait_log("application sent 90 bytes less than its Content-Length")


@pytest.mark.parametrize("sent, parts", [(100, 1), (100, 3), (20, 2)])  # (20, 2): the excess is a chunk of its own
def test_body_longer_than_its_content_length_is_truncated(server, close_log, sent, parts):
    with connect(server.port) as sock:
        sock.sendall(get(f"/length?declared=10&sent={sent}&parts={parts}") + FOLLOWER)
        f = sock.makefile("rb")
        response = read_response(f)
        assert response.header("Content-Length") == "10" and response.body == b"y" * 10
        assert read_response(f).status == 200, "the framing held: the connection stays usable"
    server.wait_log("application sent more than its Content-Length; truncated")
    assert server.log().count("truncated") == 1, "one warning per response"


def test_one_element_list_gets_a_content_length(server):
    (response,) = exchange(server.port, get("/environ"))
    assert response.header("Content-Length") == str(len(response.body)) and not response.chunked


# -- responses without a body ------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/own-server", "/recorded?n=3&size=5", "/recorded?n=2&size=5&length=10",
                                  "/write", "/file?kind=bytesio"])
def test_head_has_the_headers_of_get_and_no_body(server, path):
    with connect(server.port) as sock:
        sock.sendall(get(path) + get(path, b"HEAD") + FOLLOWER)
        f = sock.makefile("rb")
        full = read_response(f)
        head = read_response(f, head_only=True)
        assert read_response(f).status == 200, "no body bytes after the HEAD response"
    def comparable(response):
        return sorted((k, v) for k, v in response.headers if k not in ("Date", "Transfer-Encoding")
                      or v == "Thu, 01 Jan 2015 00:00:00 GMT")
    assert head.status == full.status
    if full.chunked:  # the length is only known by producing the body: HEAD may omit it
        assert comparable(head) == comparable(full)
    else:
        assert comparable(head) == comparable(full) and head.header("Content-Length") == str(len(full.body))


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
@pytest.mark.parametrize("stream", ["", "1"])
def test_204_and_304_have_no_body_and_keep_the_connection(server, status, stream):
    with connect(server.port) as sock:
        sock.sendall(get(f"/status?status={status.replace(' ', '+')}&stream={stream}") + FOLLOWER)
        f = sock.makefile("rb")
        response = read_response(f)
        assert response.status == int(status[:3])
        assert response.header("Content-Length") is None and response.header("Transfer-Encoding") is None
        follower = read_response(f)
        assert follower.status == 200, "the body the app returned was not sent"


def test_1xx_final_status_has_no_body_and_closes(server):
    data = wire(server.port, get("/status?status=103+Early+Hints") + FOLLOWER)
    assert data.startswith(b"HTTP/1.1 103 Early Hints\r\n") and data.endswith(b"\r\n\r\n")
    assert b"Connection: close" in data and b"must not" not in data and data.count(b"HTTP/1.1") == 1


# -- Date, Server, Connection ------------------------------------------------------------------

def test_date_and_server_headers(server):
    response = server.get("/environ")
    assert response.headers["Server"] == "prefork"
    assert response.headers["Date"].endswith(" GMT")
    (own,) = exchange(server.port, get("/own-server"))
    assert [v for k, v in own.headers if k == "Server"] == ["app/1.0"]
    assert [v for k, v in own.headers if k == "Date"] == ["Thu, 01 Jan 2015 00:00:00 GMT"]


def test_no_server_header_turns_server_off(start_server):
    server = start_server(APP, "--no-server-header", workers=1)
    response = server.get("/environ")
    assert "Server" not in response.headers and "Date" in response.headers
    (bad,) = exchange(server.port, b"GET / HTTP/1.1\r\n\r\n")  # no Host: the 400 is ours
    assert bad.status == 400 and bad.header("Server") is None


def test_app_connection_close_closes(server):
    with connect(server.port) as sock:
        sock.sendall(get("/close") + FOLLOWER)
        f = sock.makefile("rb")
        response = read_response(f)
        assert response.header("Connection") == "close" and response.body == b"bye\n"
        assert f.read() == b""


# -- wsgi.file_wrapper -------------------------------------------------------------------------

@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(5 * 1024 * 1024 + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data


def test_file_wrapper_sends_a_real_file_byte_identical(server, big_file):
    path, data = big_file
    response = requests.get(f"{server.url}/file", params={"kind": "file", "path": str(path)}, timeout=30)
    # sendfile's path knows the size up front; iterating the file would be chunked
    assert response.headers["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in response.headers
    assert response.content == data


def test_file_wrapper_from_an_offset_and_with_a_declared_length(server, big_file):
    path, data = big_file
    params = {"kind": "offset", "path": str(path), "offset": "1000"}
    response = requests.get(f"{server.url}/file", params=params, timeout=30)
    assert response.headers["Content-Length"] == str(len(data) - 1000) and response.content == data[1000:]
    with connect(server.port) as sock:
        sock.sendall(b"GET /file?kind=file&path=%s&length=4096 HTTP/1.1\r\nHost: t\r\n\r\n"
                     % str(path).encode() + FOLLOWER)
        f = sock.makefile("rb")
        assert read_response(f).body == data[:4096]
        assert read_response(f).status == 200


def test_file_wrapper_over_things_that_are_not_files(server, close_log):
    response = server.get("/file", params={"kind": "bytesio"})
    assert response.content == b"from a BytesIO\n" * 1000
    response = server.get("/file", params={"kind": "iterable"})
    assert response.content == b"from an iterable\n"
    wait_for(lambda: events(close_log) == ["wrapped-iterable closed"], 5, message="close() called")


def test_file_wrapper_head_sends_no_file(server, big_file):
    path, data = big_file
    with connect(server.port) as sock:
        sock.sendall(b"HEAD /file?kind=file&path=%s HTTP/1.1\r\nHost: t\r\n\r\n" % str(path).encode() + FOLLOWER)
        f = sock.makefile("rb")
        head = read_response(f, head_only=True)
        assert head.header("Content-Length") == str(len(data))
        assert read_response(f).status == 200


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
