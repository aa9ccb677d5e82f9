"""A real Flask application under ``prefork -w 2``, through ``requests``, held to the same
answers as Werkzeug's development server (``run_simple``) gives for the same app.

The app (tests/apps/flask_app.py) reports what it saw, so these tests check the environ
prefork builds through the framework: path converters and percent-decoding, query strings,
JSON, forms, multipart uploads, send_file, streaming, cookies, sessions, redirects, errors
and the client address behind a proxy.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import Server, launch, prefork_command
from httpclient import read_response

APP = "flask_app:app"
MEDIUM = "medium.bin"       # send_file, Range, ETag
UPLOAD_SIZE = 6 << 20       # "several MiB" through multipart/form-data
RECV_BUFFER = 64 << 10      # the sendfile test's client keeps its receive window this small


def _wmem_max() -> int:
    """The most a TCP socket may buffer for sending (tcp_wmem's maximum)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 << 20


# Larger than the server's send buffer plus the client's (pinned) receive buffer, twice over:
# sendfile cannot hand this over in one call, it must wait for the socket to drain.
BIG_SIZE = 2 * (_wmem_max() + RECV_BUFFER) + (1 << 20)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("flask-files")
    (directory / MEDIUM).write_bytes(os.urandom(3 << 20))
    (directory / "big.bin").write_bytes(os.urandom(BIG_SIZE))
    return directory


@pytest.fixture(scope="module")
def prefork(files: Path) -> Iterator[Server]:
    server = launch(prefork_command("-w", "2", APP), files / "prefork.log",
                    {"FLASK_APP_FILES": str(files)}, "PREFORK_FD")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def werkzeug(files: Path) -> Iterator[Server]:
    server = launch([sys.executable, "werkzeug_runner.py", APP], files / "werkzeug.log",
                    {"WERKZEUG_RUN_MAIN": "true", "FLASK_APP_FILES": str(files)},
                    "WERKZEUG_SERVER_FD")
    yield server
    server.stop()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


# -- routing, query strings, bodies ---------------------------------------------------------

@pytest.mark.parametrize(("path", "expected"), [
    ("/items/plain", {"name": "plain", "path": "/items/plain"}),
    ("/items/caf%C3%A9", {"name": "café", "path": "/items/café"}),
    ("/items/a%20b%2Bc", {"name": "a b+c", "path": "/items/a b+c"}),
    # WSGI has one PATH_INFO, percent-decoded: an encoded slash becomes a real one.
    ("/files/a%2Fb/c.txt", {"subpath": "a/b/c.txt", "path": "/files/a/b/c.txt"}),
    ("/files/deep/er/%E2%9C%93", {"subpath": "deep/er/✓", "path": "/files/deep/er/✓"}),
    ("/num/21", {"number": 21, "doubled": 42}),
])
def test_path_converters_see_decoded_paths(prefork: Server, http: requests.Session,
                                           path: str, expected: dict) -> None:
    response = http.get(prefork.url + path, timeout=10)
    assert response.status_code == 200
    assert response.json() == expected


def test_converter_mismatch_is_flask_404(prefork: Server, http: requests.Session) -> None:
    response = http.get(prefork.url + "/num/not-a-number", timeout=10)
    assert response.status_code == 404
    assert "Not Found" in response.text


def test_query_string_reaches_request_args(prefork: Server, http: requests.Session) -> None:
    response = http.get(prefork.url + "/query?a=1&a=2&b=caf%C3%A9&empty=&plus=x+y", timeout=10)
    assert response.json() == {
        "args": {"a": ["1", "2"], "b": ["café"], "empty": [""], "plus": ["x y"]},
        "query": "a=1&a=2&b=caf%C3%A9&empty=&plus=x+y",
    }


def test_json_in_and_out(prefork: Server, http: requests.Session) -> None:
    payload = {"name": "prefork", "tags": ["wsgi", "ünïcode"], "nested": {"n": 1.5}}
    response = http.post(prefork.url + "/json", json=payload, timeout=10)
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"received": payload, "kind": "dict"}


def test_malformed_json_is_flask_400(prefork: Server, http: requests.Session) -> None:
    response = http.post(prefork.url + "/json", data=b"{not json",
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400


def test_form_post(prefork: Server, http: requests.Session) -> None:
    response = http.post(prefork.url + "/form",
                         data=[("name", "Zoë"), ("colour", "red"), ("colour", "blue")], timeout=10)
    assert response.json() == {"form": {"name": ["Zoë"], "colour": ["red", "blue"]}}


def test_multipart_upload_of_several_mib(prefork: Server, http: requests.Session) -> None:
    data = os.urandom(UPLOAD_SIZE)
    response = http.post(prefork.url + "/upload", data={"note": "two files"},
                         files={"big": ("big.bin", data, "application/octet-stream"),
                                "small": ("small.txt", b"hello\n", "text/plain")}, timeout=30)
    assert response.status_code == 200
    assert response.json() == {
        "files": {
            "big": {"filename": "big.bin", "size": UPLOAD_SIZE,
                    "sha256": hashlib.sha256(data).hexdigest()},
            "small": {"filename": "small.txt", "size": 6,
                      "sha256": hashlib.sha256(b"hello\n").hexdigest()},
        },
        "form": {"note": "two files"},
    }


# -- files --------------------------------------------------------------------------------

def test_send_file_goes_through_wsgi_file_wrapper(prefork: Server, files: Path,
                                                  http: requests.Session) -> None:
    response = http.get(prefork.url + "/download/" + MEDIUM, timeout=30)
    assert response.status_code == 200
    # Flask used the server's wsgi.file_wrapper (the one that sends with sendfile) ...
    assert response.headers["X-File-Wrapper"] == "prefork.workers.filewrapper.FileWrapper"
    # ... and every byte arrived.
    assert response.headers["Content-Length"] == str((files / MEDIUM).stat().st_size)
    assert response.content == (files / MEDIUM).read_bytes()


def test_file_wrapper_of_a_real_file_is_sent_with_sendfile(prefork: Server, files: Path) -> None:
    """flask_app's /raw/sendfile/ wraps a file whose read() raises, so the body can only be
    the file's bytes if the server sent its descriptor with sendfile. The file is bigger than
    the socket buffers (the client pins its receive buffer small), so sendfile has to wait
    for the socket to drain and resume at the right offset, many times."""
    expected = (files / "big.bin").read_bytes()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)  # before connect
        sock.settimeout(30)
        sock.connect(("127.0.0.1", prefork.port))
        sock.sendall(b"GET /raw/sendfile/big.bin HTTP/1.1\r\nHost: localhost\r\n"
                     b"Connection: close\r\n\r\n")
        response = read_response(sock.makefile("rb"))
    assert response.status == 200
    assert response.header("Content-Length") == str(len(expected))
    assert len(response.body) == len(expected)
    assert hashlib.sha256(response.body).digest() == hashlib.sha256(expected).digest()
    assert "iterated the file" not in prefork.log()


def test_conditional_and_range_requests_on_send_file(prefork: Server, files: Path,
                                                     http: requests.Session) -> None:
    content = (files / MEDIUM).read_bytes()
    first = http.get(prefork.url + "/download/" + MEDIUM, headers={"Range": "bytes=100-1099"},
                     timeout=10)
    assert first.status_code == 206
    assert first.content == content[100:1100]
    etag = first.headers["ETag"]
    again = http.get(prefork.url + "/download/" + MEDIUM, headers={"If-None-Match": etag},
                     timeout=10)
    assert again.status_code == 304
    assert again.content == b""


def test_send_file_response_has_one_date_header(prefork: Server) -> None:
    """Werkzeug's send_file sets Date itself; the server must not add a second one (RFC 9110
    §5.3: no repeated field lines for a field that is not a list; Date is a singleton)."""
    with socket.create_connection(("127.0.0.1", prefork.port), timeout=10) as sock:
        sock.sendall(b"HEAD /download/medium.bin HTTP/1.1\r\nHost: localhost\r\n"
                     b"Connection: close\r\n\r\n")
        response = read_response(sock.makefile("rb"), head_only=True)
    assert response.status == 200
    assert [name for name, _ in response.headers if name.lower() == "date"] == ["Date"]


# -- streaming, cookies, sessions, redirects, errors ----------------------------------------

def test_stream_with_context_is_chunked(prefork: Server, http: requests.Session) -> None:
    with http.get(prefork.url + "/stream?n=2000", stream=True, timeout=10) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in response.headers
        lines = list(response.iter_lines())
    assert len(lines) == 2000
    assert lines[0] == b"line 0 of /stream" and lines[-1] == b"line 1999 of /stream"


def test_cookies_are_set_separately_and_sent_back(prefork: Server, http: requests.Session) -> None:
    response = http.get(prefork.url + "/cookies/set?flavour=oat&size=large", timeout=10)
    set_cookies = response.raw.headers.getlist("Set-Cookie")
    assert len(set_cookies) == 2  # two header lines, never folded into one
    assert all("HttpOnly" in line and "SameSite=Lax" in line for line in set_cookies)
    assert http.get(prefork.url + "/cookies", timeout=10).json() == {
        "cookies": {"flavour": "oat", "size": "large"}}


def test_session_cookie_round_trip(prefork: Server, http: requests.Session) -> None:
    counts = [http.get(prefork.url + "/session/incr", timeout=10).json()["count"]
              for _ in range(5)]
    assert counts == [1, 2, 3, 4, 5]
    # A fresh client starts its own session.
    assert requests.get(prefork.url + "/session/incr", timeout=10).json() == {"count": 1}


def test_redirects(prefork: Server, http: requests.Session) -> None:
    response = http.get(prefork.url + "/redirect", timeout=10)
    assert [r.status_code for r in response.history] == [302]
    assert response.history[0].headers["Location"] == "/"
    assert response.text == "Hello from Flask\n"
    moved = http.get(prefork.url + "/moved/caf%C3%A9", allow_redirects=False, timeout=10)
    assert moved.status_code == 301
    assert moved.headers["Location"] == "/items/caf%C3%A9"


def test_abort_404(prefork: Server, http: requests.Session) -> None:
    response = http.get(prefork.url + "/missing", timeout=10)
    assert response.status_code == 404
    assert "<h1>Not Found</h1>" in response.text


def test_unhandled_exception_is_500_and_the_app_keeps_serving(prefork: Server) -> None:
    workers = prefork.worker_pids()
    with requests.Session() as http:
        response = http.get(prefork.url + "/boom", timeout=10)
        assert response.status_code == 500
        assert response.headers["Connection"] == "close"
        assert response.text == "500 Internal Server Error\n"  # prefork's, not Flask's page
        for _ in range(20):
            assert http.get(prefork.url + "/", timeout=10).text == "Hello from Flask\n"
    assert prefork.worker_pids() == workers  # no worker died for it
    prefork.wait_log("RuntimeError: deliberate failure in a Flask view")


# -- the client address behind a proxy -------------------------------------------------------

PROXY_HEADERS = {"X-Forwarded-For": "203.0.113.9, 198.51.100.4", "X-Forwarded-Proto": "https"}


def test_forwarded_headers_from_a_trusted_proxy(prefork: Server) -> None:
    """127.0.0.1 is trusted by default: the app sees the client the proxy names, rightmost
    untrusted hop first, and the scheme it was reached by."""
    response = requests.get(prefork.url + "/remote", headers=PROXY_HEADERS, timeout=10)
    assert response.json() == {"remote_addr": "198.51.100.4", "scheme": "https"}
    plain = requests.get(prefork.url + "/remote", timeout=10)
    assert plain.json() == {"remote_addr": "127.0.0.1", "scheme": "http"}


def test_forwarded_headers_ignored_from_an_untrusted_peer(start_server, files: Path) -> None:
    server = start_server(APP, "--forwarded-allow-ips", "192.0.2.1", workers=1,
                          env={"FLASK_APP_FILES": str(files)})
    response = requests.get(server.url + "/remote", headers=PROXY_HEADERS, timeout=10)
    assert response.json() == {"remote_addr": "127.0.0.1", "scheme": "http"}


# -- the same answers as Werkzeug's development server ---------------------------------------

# Headers the two servers legitimately differ on, left out of the comparison:
#   Date, Server            - each server's own;
#   Content-Length, Transfer-Encoding, Connection, Keep-Alive
#                           - framing: Werkzeug's dev server closes every connection, prefork
#                             keeps them alive; the body bytes are compared instead.
#   X-File-Wrapper          - flask_app reports which wsgi.file_wrapper carried send_file:
#                             prefork's (sendfile) versus Werkzeug's fallback iterator.
NOT_COMPARED = frozenset({"date", "server", "content-length", "transfer-encoding", "connection",
                          "keep-alive", "x-file-wrapper"})
UPLOAD_BODY = os.urandom(2 << 20)
COMPARED_REQUESTS = [
    ("GET", "/", {}),
    ("GET", "/items/caf%C3%A9", {}),
    ("GET", "/files/a%2Fb/c%20d.txt", {}),
    ("GET", "/num/7", {}),
    ("GET", "/num/seven", {}),
    ("GET", "/query?a=1&a=2&b=%C3%A9&empty=", {}),
    ("POST", "/json", {"json": {"k": [1, 2, {"x": None}]}}),
    ("POST", "/json", {"data": b"{broken", "headers": {"Content-Type": "application/json"}}),
    ("POST", "/form", {"data": {"a": "1", "b": "ü"}}),
    ("POST", "/upload", {"files": {"f": ("f.bin", UPLOAD_BODY)}, "data": {"x": "y"}}),
    ("GET", "/download/" + MEDIUM, {}),
    ("HEAD", "/download/" + MEDIUM, {}),
    ("GET", "/download/" + MEDIUM, {"headers": {"Range": "bytes=0-99,200-299"}}),
    ("GET", "/download/nope.bin", {}),
    ("GET", "/stream?n=300", {}),
    ("GET", "/cookies/set?a=1&b=2", {}),
    ("GET", "/cookies", {"headers": {"Cookie": "a=1; b=two"}}),
    ("GET", "/redirect", {}),
    ("GET", "/moved/x%20y", {}),
    ("GET", "/missing", {}),
    ("GET", "/no/such/route", {}),
    ("GET", "/remote", {}),
]


def _answer(session: requests.Session, base: str, method: str, path: str,
            kwargs: dict) -> tuple[int, list[tuple[str, str]], bytes]:
    response = session.request(method, base + path, allow_redirects=False, timeout=30, **kwargs)
    headers = sorted((name.lower(), value) for name, value in response.raw.headers.items()
                     if name.lower() not in NOT_COMPARED)
    return response.status_code, headers, response.content


@pytest.mark.parametrize(("method", "path", "kwargs"), COMPARED_REQUESTS,
                         ids=[f"{m} {p}" for m, p, _ in COMPARED_REQUESTS])
def test_same_answer_as_werkzeug(prefork: Server, werkzeug: Server, method: str, path: str,
                                 kwargs: dict) -> None:
    with requests.Session() as ours, requests.Session() as reference:
        got = _answer(ours, prefork.url, method, path, kwargs)
        expected = _answer(reference, werkzeug.url, method, path, kwargs)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert got[2] == expected[2]
