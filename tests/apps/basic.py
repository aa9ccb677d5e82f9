"""The app the integration tests run: one route per behaviour a test needs to observe.

``app`` runs inside ``wsgiref.validate.validator`` with its warnings turned into errors, so
every test that uses it also checks the server against PEP 3333: a violation is an
AssertionError (or WSGIWarning) in the app, which the test sees as a 500. The validator hides
the one-element list the routes return, so they declare Content-Length themselves.
"""

import json
import os
import time
import warnings
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)
#: The validator wants read() with an explicit size; a chunked body has no length to give.
READ_SIZE = 65536


def respond(start_response, status, content_type, body):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def routes(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        return respond(start_response, "404 Not Found", "text/plain", b"not found\n")
    return handler(environ, start_response)


def hello(environ, start_response):
    return respond(start_response, "200 OK", "text/plain", b"Hello, world!\n")


def echo(environ, start_response):
    stream = environ["wsgi.input"]
    parts = []
    while data := stream.read(READ_SIZE):
        parts.append(data)
    return respond(start_response, "200 OK", "application/octet-stream", b"".join(parts))


def echo_lines(environ, start_response):
    lines = [line.decode("latin-1") for line in environ["wsgi.input"]]
    return respond(start_response, "200 OK", "application/json", json.dumps(lines).encode())


def stream(environ, start_response):
    count = int(environ.get("QUERY_STRING") or 5)
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(count):
        yield f"chunk {i}\n".encode()


def sleep(environ, start_response):
    seconds = float(environ.get("QUERY_STRING") or 1)
    time.sleep(seconds)
    return respond(start_response, "200 OK", "text/plain", f"slept {seconds}\n".encode())


def error(environ, start_response):
    raise RuntimeError("deliberate failure for the test")


def pid(environ, start_response):
    return respond(start_response, "200 OK", "text/plain", str(os.getpid()).encode())


def dump_environ(environ, start_response):
    data = {key: value for key, value in environ.items() if isinstance(value, (str, bool, int))}
    return respond(start_response, "200 OK", "application/json", json.dumps(data).encode())


ROUTES = {
    "/": hello,
    "/echo": echo,
    "/echo-lines": echo_lines,
    "/stream": stream,
    "/sleep": sleep,
    "/error": error,
    "/pid": pid,
    "/environ": dump_environ,
}

app = validator(routes)
