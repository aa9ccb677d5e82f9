"""Routes the production-feature tests (TLS, PROXY protocol, access log, nginx) need beyond
basic.py (whose echo/stream/environ it reuses): a file body through wsgi.file_wrapper, a
response header to log, a body-less answer, a slow answer, the client's address."""

import json
import os
import tempfile
import time

from basic import dump_environ, echo, stream


def app(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    return handler(environ, start_response)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Served-By", "prod-app")])
    return [b"Hello, world!\n"]


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def file_body(environ, start_response):
    """?SIZE bytes of pattern() from a real file, handed to wsgi.file_wrapper."""
    f = tempfile.TemporaryFile()
    f.write(pattern(int(environ.get("QUERY_STRING") or 300_000)))
    f.seek(0)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](f)


def empty(environ, start_response):
    start_response("204 No Content", [])
    return []


def slow(environ, start_response):
    time.sleep(float(environ.get("QUERY_STRING") or 0.05))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slow\n"]


def whoami(environ, start_response):
    keys = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTP_X_FORWARDED_FOR")
    body = json.dumps({key: environ.get(key) for key in keys} | {"pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


ROUTES = {"/": hello, "/file": file_body, "/empty": empty, "/slow": slow, "/whoami": whoami,
          "/echo": echo, "/stream": stream, "/environ": dump_environ}
