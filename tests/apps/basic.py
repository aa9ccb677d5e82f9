"""The app the integration tests run: one route per behaviour a test needs to observe."""

import json
import os
import time


def app(environ, start_response):
    path = environ["PATH_INFO"]
    handler = ROUTES.get(path)
    if handler is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    return handler(environ, start_response)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!\n"]


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


def echo_lines(environ, start_response):
    lines = list(environ["wsgi.input"])
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps([line.decode("latin-1") for line in lines]).encode()]


def stream(environ, start_response):
    count = int(environ.get("QUERY_STRING") or 5)
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(count):
        yield f"chunk {i}\n".encode()


def sleep(environ, start_response):
    seconds = float(environ.get("QUERY_STRING") or 1)
    time.sleep(seconds)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"slept {seconds}\n".encode()]


def error(environ, start_response):
    raise RuntimeError("deliberate failure for the test")


def pid(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def dump_environ(environ, start_response):
    data = {key: value for key, value in environ.items() if isinstance(value, (str, bool, int))}
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


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
