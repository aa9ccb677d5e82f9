"""The environ an application sees (PEP 3333), built from raw requests sent to prefork's worker
in this process (the ``in_process`` fixture: the real handler and state machine over a
socketpair). The peer is 127.0.0.1; what needs a real peer or --threads is in
tests/integration/test_wsgi.py.

Each case is the raw bytes of one request and the environ keys it must produce (``ABSENT``
for keys that must not be there). The app (tests/apps/wsgi_cases.py) returns its environ as
JSON for any path it has no other route for.
"""

from __future__ import annotations

import json

import pytest

ABSENT = object()
APP = "wsgi_cases:app"


def environ_of(server, raw: bytes) -> dict:
    response = server.request(raw).response()
    assert response.status == 200, response.body
    return json.loads(response.body)


def check(environ: dict, expected: dict) -> None:
    for key, value in expected.items():
        if value is ABSENT:
            assert key not in environ, f"{key} should be absent, is {environ[key]!r}"
        else:
            assert environ.get(key, ABSENT) == value, f"{key}: {environ.get(key, ABSENT)!r} != {value!r}"


CASES = {
    "request line": (
        b"GET /environ?a=%20b&c=d+e HTTP/1.1\r\nHost: example.org\r\n\r\n",
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/environ", "QUERY_STRING": "a=%20b&c=d+e",
         "RAW_URI": "/environ?a=%20b&c=d+e", "SERVER_PROTOCOL": "HTTP/1.1", "SCRIPT_NAME": "",
         "HTTP_HOST": "example.org", "CONTENT_TYPE": ABSENT, "CONTENT_LENGTH": ABSENT},
    ),
    "path is percent-decoded, then latin-1": (
        b"GET /environ%2F%C3%A9t%C3%A9%20x HTTP/1.1\r\nHost: t\r\n\r\n",
        {"PATH_INFO": "/environ/\xc3\xa9t\xc3\xa9 x", "RAW_URI": "/environ%2F%C3%A9t%C3%A9%20x"},
    ),
    "an empty query is an empty string": (
        b"GET /environ? HTTP/1.1\r\nHost: t\r\n\r\n",
        {"QUERY_STRING": "", "PATH_INFO": "/environ"},
    ),
    "content type and length have no HTTP_ prefix": (
        b"POST /environ HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc",
        {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "3",
         "HTTP_CONTENT_TYPE": ABSENT, "HTTP_CONTENT_LENGTH": ABSENT},
    ),
    "a repeated equal Content-Length is given once": (
        b"POST /environ HTTP/1.1\r\nHost: t\r\nContent-Length: 003\r\nContent-Length: 3\r\n\r\nabc",
        {"CONTENT_LENGTH": "3"},
    ),
    "a chunked body is buffered decoded: it has a CONTENT_LENGTH and no Transfer-Encoding": (
        b"POST /environ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        {"CONTENT_LENGTH": "3", "HTTP_TRANSFER_ENCODING": ABSENT},
    ),
    "repeated headers are joined, Cookie with a semicolon": (
        b"GET /environ HTTP/1.1\r\nHost: t\r\nX-Multi: a\r\nCookie: a=1\r\nx-multi: b\r\n"
        b"Cookie: b=2\r\nAccept: text/html\r\n\r\n",
        {"HTTP_X_MULTI": "a, b", "HTTP_COOKIE": "a=1; b=2", "HTTP_ACCEPT": "text/html"},
    ),
    "names with an underscore are dropped, never conflated with dashes": (
        b"GET /environ HTTP/1.1\r\nHost: t\r\nX-Auth-User: real\r\nX_Auth_User: spoofed\r\n"
        b"X-Forwarded_For: 203.0.113.9\r\nContent_Length: 5\r\n\r\n",
        {"HTTP_X_AUTH_USER": "real", "HTTP_X_FORWARDED_FOR": ABSENT, "REMOTE_ADDR": "127.0.0.1",
         "CONTENT_LENGTH": ABSENT},
    ),
    "absolute-form: the target's authority replaces Host": (
        b"GET http://example.com:8080/environ?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n",
        {"HTTP_HOST": "example.com:8080", "PATH_INFO": "/environ", "QUERY_STRING": "q=1",
         "RAW_URI": "http://example.com:8080/environ?q=1"},
    ),
    "absolute-form without a path": (
        b"GET HTTPS://example.com?x HTTP/1.1\r\nHost: other.example\r\n\r\n",
        {"HTTP_HOST": "example.com", "PATH_INFO": "/", "QUERY_STRING": "x"},
    ),
    "HTTP/1.0 without Host": (
        b"GET /environ HTTP/1.0\r\n\r\n",
        {"SERVER_PROTOCOL": "HTTP/1.0", "HTTP_HOST": ABSENT},
    ),
    "wsgi keys": (
        b"GET /environ HTTP/1.1\r\nHost: t\r\n\r\n",
        {"wsgi.version": [1, 0], "wsgi.url_scheme": "http", "wsgi.multithread": False,
         "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.input_terminated": True,
         "wsgi.errors": "<stderr>", "wsgi.input": "EmptyBody", "SERVER_SOFTWARE": "prefork"},
    ),
    "a request with a body gets a real input stream": (
        b"PUT /environ HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
        {"wsgi.input": "BytesIO", "REQUEST_METHOD": "PUT"},
    ),
}


@pytest.mark.parametrize("raw, expected", CASES.values(), ids=CASES.keys())
def test_environ_from_raw_request(in_process, raw, expected):
    server = in_process(APP)
    check(environ_of(server, raw), expected)


def test_unbuffered_bodies_stream_and_a_chunked_one_keeps_its_framing(in_process):
    """--no-request-buffering: the app reads the socket; a chunked body has no length yet."""
    server = in_process(APP, "--no-request-buffering")
    environ = environ_of(server, b"POST /environ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked"
                                      b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    check(environ, {"CONTENT_LENGTH": ABSENT, "HTTP_TRANSFER_ENCODING": "chunked",
                    "wsgi.input": "RequestBody"})


ROOT_PATH_CASES = [
    (b"/api/environ", "/api", "/environ"),
    (b"/api", "/api", ""),
    (b"/api/", "/api", "/"),
    (b"/apix/y", "/api", "/apix/y"),  # a prefix is whole path segments
    (b"/other", "/api", "/other"),  # a proxy that stripped the prefix itself
    (b"/api%2Fz", "/api", "/z"),  # compared after decoding, like PATH_INFO
]


def test_root_path_sets_script_name_and_is_cut_off_path_info(in_process):
    server = in_process(APP, "--root-path", "/api/")
    for target, script_name, path_info in ROOT_PATH_CASES:
        environ = environ_of(server, b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target)
        assert [environ["SCRIPT_NAME"], environ["PATH_INFO"]] == [script_name, path_info], target


def test_script_name_header_from_a_trusted_proxy(in_process):
    server = in_process(APP)  # loopback is trusted by default
    raw = b"GET /mount/y HTTP/1.1\r\nHost: t\r\nSCRIPT_NAME: /mount\r\n\r\n"
    check(environ_of(server, raw), {"SCRIPT_NAME": "/mount", "PATH_INFO": "/y"})
    lower = b"GET /mount/environ HTTP/1.1\r\nHost: t\r\nscript_name: /mount/\r\n\r\n"
    environ = environ_of(server, lower)
    check(environ, {"SCRIPT_NAME": "/mount", "PATH_INFO": "/environ", "HTTP_SCRIPT_NAME": ABSENT})
    dashed = b"GET /mount/environ HTTP/1.1\r\nHost: t\r\nScript-Name: /mount\r\n\r\n"
    check(environ_of(server, dashed), {"SCRIPT_NAME": "", "PATH_INFO": "/mount/environ",
                                            "HTTP_SCRIPT_NAME": "/mount"})


def test_script_name_header_from_an_untrusted_peer_is_dropped(in_process):
    server = in_process(APP, "--forwarded-allow-ips", "10.0.0.0/8", "--root-path", "/api")
    raw = b"GET /mount/environ HTTP/1.1\r\nHost: t\r\nSCRIPT_NAME: /mount\r\n\r\n"
    check(environ_of(server, raw), {"SCRIPT_NAME": "/api", "PATH_INFO": "/mount/environ",
                                         "HTTP_SCRIPT_NAME": ABSENT})
