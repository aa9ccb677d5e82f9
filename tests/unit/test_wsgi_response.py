"""What goes on the wire for what an application returns: start_response checks, exc_info,
write(), close(), Content-Length framing, HEAD / 1xx / 204 / 304, Date and Server, and
wsgi.file_wrapper — through prefork's worker in this process (the ``in_process`` fixture: the
real handler and state machine over a socketpair), read as raw bytes. What needs a worker
process (it survives a failing app, sendfile over TCP, wsgiref's validator) is in
tests/integration/test_wsgi.py.

The app is tests/apps/wsgi_cases.py; routes that test close() log "<name> closed" to the file
in $WSGI_CLOSE_LOG.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest

APP = "wsgi_cases:app"
FOLLOWER = b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture
def close_log(tmp_path: Path) -> Path:
    return tmp_path / "closed.log"


@pytest.fixture
def server(in_process, close_log, monkeypatch):
    monkeypatch.setenv("WSGI_CLOSE_LOG", str(close_log))
    return in_process(APP)


def events(close_log: Path) -> list[str]:
    return close_log.read_text().splitlines() if close_log.exists() else []


def wire(server, data: bytes) -> bytes:
    """Everything the server sends back; it must have closed the connection."""
    client = server.request(data)
    assert client.closed, "the server keeps the connection open"
    return client.wire()


def get(path: str, method: bytes = b"GET", version: bytes = b"1.1") -> bytes:
    return b"%s %s HTTP/%s\r\nHost: t\r\n\r\n" % (method, path.encode(), version)


# -- start_response ----------------------------------------------------------------------------

BAD_HEADER_KINDS = ["crlf-value", "lf-value", "cr-value", "nul-value", "crlf-name", "colon-name",
                    "space-name", "empty-name", "non-latin1-value", "bytes-value", "bad-length"]


@pytest.mark.parametrize("kind", BAD_HEADER_KINDS)
def test_bad_response_header_is_500_and_never_reaches_the_wire(server, kind):
    data = wire(server, get(f"/bad-header?kind={kind}") + FOLLOWER)
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert data.count(b"HTTP/1.1") == 1, "the connection must close after the 500"
    for fragment in (b"evil", b"Set-Cookie", b"X-Injected", b"X Injected"):
        assert fragment not in data
    assert "invalid " in server.log()


def test_bad_status_is_500_and_never_reaches_the_wire(server):
    data = wire(server, get("/bad-status"))
    assert data.startswith(b"HTTP/1.1 500 ") and b"evil" not in data


def test_exc_info_replaces_headers_not_yet_sent(server):
    response = server.request(get("/exc-before")).response()
    assert response.status == 503 and response.body == b"replaced\n"
    assert response.header("X-Second") == "1" and response.header("X-First") is None


def test_exc_info_after_the_head_was_sent_is_re_raised(server, close_log):
    data = wire(server, get("/exc-after") + FOLLOWER)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
    assert body == b"8\r\npartial \r\n", "cut short: no last chunk, no second response"
    assert events(close_log) == ["exc_info re-raised"]


def test_second_start_response_without_exc_info_is_refused(server, close_log):
    response = server.request(get("/twice")).response()
    assert response.status == 200 and response.body == b"ok\n"
    assert events(close_log) == ["second call refused"]


def test_write_callable_alone_and_mixed_with_the_iterable(server, close_log):
    written, mixed, follower = server.request(get("/write") + get("/write-mixed") + FOLLOWER).responses(3)
    assert written.chunked and written.body == b"one two\n"
    assert mixed.chunked and mixed.body == b"written then iterated\n"
    assert follower.status == 200
    assert events(close_log) == ["write-mixed closed"]


# -- close() -----------------------------------------------------------------------------------

def test_close_is_called_after_a_complete_response(server, close_log):
    response, follower = server.request(get("/recorded?name=ok&n=3&size=4") + FOLLOWER).responses(2)
    assert response.body == b"xxxx" * 3
    assert follower.status == 200
    assert events(close_log) == ["ok closed"]


def test_failure_before_the_first_chunk_is_a_500(server, close_log):
    data = wire(server, get("/recorded?name=early&n=5&fail=0"))
    assert data.startswith(b"HTTP/1.1 500 ")
    assert events(close_log) == ["early closed"]


# -- Content-Length ----------------------------------------------------------------------------

def test_body_shorter_than_its_content_length_closes_the_connection(server, close_log):
    data = wire(server, get("/length?declared=100&sent=10") + FOLLOWER)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Length: 100" in head and body == b"y" * 10
    assert events(close_log) == ["declared closed"]
    assert "application sent 90 bytes less than its Content-Length" in server.log()


@pytest.mark.parametrize("sent, parts", [(100, 1), (100, 3), (20, 2)])  # (20, 2): the excess is a chunk of its own
def test_body_longer_than_its_content_length_is_truncated(server, close_log, sent, parts):
    response, follower = server.request(get(f"/length?declared=10&sent={sent}&parts={parts}") + FOLLOWER).responses(2)
    assert response.header("Content-Length") == "10" and response.body == b"y" * 10
    assert follower.status == 200, "the framing held: the connection stays usable"
    assert "application sent more than its Content-Length; truncated" in server.log()
    assert server.log().count("truncated") == 1, "one warning per response"


def test_one_element_list_gets_a_content_length(server):
    response = server.request(get("/environ")).response()
    assert response.header("Content-Length") == str(len(response.body)) and not response.chunked


# -- responses without a body ------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/own-server", "/recorded?n=3&size=5", "/recorded?n=2&size=5&length=10",
                                  "/write", "/file?kind=bytesio"])
def test_head_has_the_headers_of_get_and_no_body(server, path):
    client = server.request(get(path) + get(path, b"HEAD") + FOLLOWER)
    full = client.response()
    head = client.response(head_only=True)
    assert client.response().status == 200, "no body bytes after the HEAD response"
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
    response, follower = server.request(get(f"/status?status={status.replace(' ', '+')}&stream={stream}")
                                        + FOLLOWER).responses(2)
    assert response.status == int(status[:3])
    assert response.header("Content-Length") is None and response.header("Transfer-Encoding") is None
    assert follower.status == 200, "the body the app returned was not sent"


def test_1xx_final_status_has_no_body_and_closes(server):
    data = wire(server, get("/status?status=103+Early+Hints") + FOLLOWER)
    assert data.startswith(b"HTTP/1.1 103 Early Hints\r\n") and data.endswith(b"\r\n\r\n")
    assert b"Connection: close" in data and b"must not" not in data and data.count(b"HTTP/1.1") == 1


# -- Date, Server, Connection ------------------------------------------------------------------

def test_date_and_server_headers(server):
    response = server.request(get("/environ")).response()
    assert response.header("Server") == "prefork"
    assert response.header("Date").endswith(" GMT")
    own = server.request(get("/own-server")).response()
    assert [v for k, v in own.headers if k == "Server"] == ["app/1.0"]
    assert [v for k, v in own.headers if k == "Date"] == ["Thu, 01 Jan 2015 00:00:00 GMT"]


def test_no_server_header_turns_server_off(in_process):
    server = in_process(APP, "--no-server-header")
    response = server.request(get("/environ")).response()
    assert response.header("Server") is None and response.header("Date") is not None
    bad = server.request(b"GET / HTTP/1.1\r\n\r\n").response()  # no Host: the 400 is ours
    assert bad.status == 400 and bad.header("Server") is None


def test_app_connection_close_closes(server):
    client = server.request(get("/close") + FOLLOWER)
    response = client.response()
    assert response.header("Connection") == "close" and response.body == b"bye\n"
    assert client.closed and client.rest() == b""


# -- wsgi.file_wrapper -------------------------------------------------------------------------

@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(5 * 1024 * 1024 + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data


def file_get(path: Path, **params: str) -> bytes:
    query = "&".join(f"{key}={quote(str(value))}" for key, value in {"path": path, **params}.items())
    return get(f"/file?{query}")


def test_file_wrapper_from_an_offset_and_with_a_declared_length(server, big_file):
    path, data = big_file
    response = server.request(file_get(path, kind="offset", offset="1000")).response()
    assert response.header("Content-Length") == str(len(data) - 1000) and response.body == data[1000:]
    declared, follower = server.request(file_get(path, kind="file", length="4096") + FOLLOWER).responses(2)
    assert declared.body == data[:4096]
    assert follower.status == 200


def test_file_wrapper_over_things_that_are_not_files(server, close_log):
    response = server.request(get("/file?kind=bytesio")).response()
    assert response.body == b"from a BytesIO\n" * 1000
    response = server.request(get("/file?kind=iterable")).response()
    assert response.body == b"from an iterable\n"
    assert events(close_log) == ["wrapped-iterable closed"], "close() called"


def test_file_wrapper_head_sends_no_file(server, big_file):
    path, data = big_file
    client = server.request(file_get(path, kind="file").replace(b"GET", b"HEAD", 1) + FOLLOWER)
    head = client.response(head_only=True)
    assert head.header("Content-Length") == str(len(data))
    assert client.response().status == 200
