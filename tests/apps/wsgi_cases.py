"""An application that does what the WSGI tests need to watch the server cope with: odd
responses, bad headers, reads of every kind from wsgi.input, file_wrapper, failures.

It is deliberately not wrapped in the validator (basic.py is): several routes break PEP 3333
on purpose. Routes that test ``close()`` append "<name> closed" to the file named by
$WSGI_CLOSE_LOG, so a test can check the server called it.
"""

import io
import json
import os
import sys
from urllib.parse import parse_qsl

BLOCK = 65536


def record(event):
    with open(os.environ["WSGI_CLOSE_LOG"], "a") as log:
        log.write(event + "\n")


class Recorded:
    """An iterable of ``chunks`` whose close() is logged; it raises after ``fail_after``
    chunks if that is set, like an app failing mid-response."""

    def __init__(self, name, chunks, fail_after=None):
        self.name = name
        self.chunks = chunks
        self.fail_after = fail_after

    def __iter__(self):
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_after:
                raise RuntimeError(f"{self.name}: deliberate failure mid-response")
            yield chunk

    def close(self):
        record(f"{self.name} closed")


def query(environ):
    return dict(parse_qsl(environ["QUERY_STRING"]))


def text(start_response, body, status="200 OK", headers=()):
    start_response(status, [("Content-Type", "text/plain"), *headers])
    return [body]


def environ_json(environ, start_response):
    """Every str, bool, int and tuple value, plus the types of the stream keys. The answer
    to every path no other route claims."""
    data = {key: value for key, value in environ.items() if isinstance(value, (str, bool, int, tuple))}
    data["wsgi.input"] = type(environ["wsgi.input"]).__name__
    data["wsgi.errors"] = getattr(environ["wsgi.errors"], "name", "?")
    return text(start_response, json.dumps(data).encode(), headers=[("Content-Type", "application/json")])


def input_ops(environ, start_response):
    """Run the reads named in the query (``ops=read:5,readline,readlines:10,iter,read``) on
    wsgi.input and return each result, latin-1 decoded, as JSON."""
    stream = environ["wsgi.input"]
    results = []
    for op in query(environ)["ops"].split(","):
        name, _, arg = op.partition(":")
        args = (int(arg),) if arg else ()
        if name == "iter":
            value = list(stream)
        else:
            value = getattr(stream, name)(*args)
        if isinstance(value, list):
            results.append([line.decode("latin-1") for line in value])
        else:
            results.append(value.decode("latin-1"))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(results).encode()]


BAD_HEADERS = {
    "crlf-value": ("X-Injected", "a\r\nSet-Cookie: evil=1"),
    "lf-value": ("X-Injected", "a\nSet-Cookie: evil=1"),
    "cr-value": ("X-Injected", "a\rSet-Cookie: evil=1"),
    "nul-value": ("X-Injected", "a\x00evil"),
    "crlf-name": ("X-Injected\r\nSet-Cookie: evil=1\r\nX-A", "b"),
    "colon-name": ("Set-Cookie: evil", "1"),
    "space-name": ("X Injected", "1"),
    "empty-name": ("", "1"),
    "non-latin1-value": ("X-Injected", "\u20ac evil"),
    "bytes-value": ("X-Injected", b"evil"),
    "bad-length": ("Content-Length", "12, evil"),
}


def bad_header(environ, start_response):
    name, value = BAD_HEADERS[query(environ)["kind"]]
    start_response("200 OK", [("Content-Type", "text/plain"), (name, value)])
    return [b"evil body\n"]


def bad_status(environ, start_response):
    start_response("200 OK\r\nSet-Cookie: evil=1", [("Content-Type", "text/plain")])
    return [b"evil body\n"]


def exc_info_before_send(environ, start_response):
    """An error page replaces the headers of a response that has not been sent yet."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
    try:
        raise ValueError("the app changed its mind")
    except ValueError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("X-Second", "1")],
                       sys.exc_info())
    return [b"replaced\n"]


def exc_info_after_send(environ, start_response):
    """start_response with exc_info once the head is out must raise (PEP 3333); the app
    records that it did, and the server can only cut the response short."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"partial ")
    try:
        raise ValueError("too late")
    except ValueError:
        try:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        except ValueError:
            record("exc_info re-raised")
            raise
    return [b"never\n"]


def second_start_response(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        start_response("200 OK", [("Content-Type", "text/plain")])
    except RuntimeError:
        record("second call refused")
    return [b"ok\n"]


def write_only(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"one ")
    write(b"two\n")
    return []


def write_mixed(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    return Recorded("write-mixed", [b"then ", b"", b"iterated\n"])


def recorded(environ, start_response):
    """``n`` chunks of ``size`` bytes; ``fail`` makes the iterable raise after that many."""
    args = query(environ)
    size, count = int(args.get("size", 10)), int(args.get("n", 3))
    fail = int(args["fail"]) if "fail" in args else None
    headers = [("Content-Type", "application/octet-stream")]
    if "length" in args:
        headers.append(("Content-Length", args["length"]))
    start_response("200 OK", headers)
    return Recorded(args.get("name", "recorded"), [b"x" * size] * count, fail)


def upload_stream(environ, start_response):
    """Reads the body while responding: a client that leaves mid-upload interrupts it."""
    stream = environ["wsgi.input"]
    start_response("200 OK", [("Content-Type", "text/plain")])

    def counts():
        total = 0
        while data := stream.read(BLOCK):
            total += len(data)
            yield b"%d\n" % total

    return Recorded("upload", counts())


def declared_length(environ, start_response):
    """Declares ``declared`` bytes, sends ``sent`` in ``parts`` pieces."""
    args = query(environ)
    declared, sent, parts = int(args["declared"]), int(args["sent"]), int(args.get("parts", 1))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(declared))])
    body = b"y" * sent
    step = -(-sent // parts) if sent else 1
    return Recorded("declared", [body[i:i + step] for i in range(0, sent, step)] or [b""])


def status(environ, start_response):
    """The status in the query, with a body the server must not send for 1xx/204/304/HEAD."""
    args = query(environ)
    start_response(args["status"], [("Content-Type", "text/plain")])
    if args.get("stream"):
        return Recorded("status", [b"body that ", b"must not be sent\n"])
    return [b"body that must not be sent\n"]


def own_server_and_date(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Server", "app/1.0"),
                              ("Date", "Thu, 01 Jan 2015 00:00:00 GMT")])
    return [b"ok\n"]


def connection_close(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
    return [b"bye\n"]


def file_wrapper(environ, start_response):
    """``kind``: file (a real file: sendfile), offset (the same, from an offset), bytesio,
    iterable (no read() at all); ``length`` declares a Content-Length."""
    args = query(environ)
    kind = args["kind"]
    headers = [("Content-Type", "application/octet-stream")]
    if "length" in args:
        headers.append(("Content-Length", args["length"]))
    start_response("200 OK", headers)
    wrapper = environ["wsgi.file_wrapper"]
    if kind in ("file", "offset"):
        handle = open(args["path"], "rb")
        if kind == "offset":
            handle.seek(int(args["offset"]))
        return wrapper(handle, 65536)
    if kind == "bytesio":
        return wrapper(io.BytesIO(b"from a BytesIO\n" * 1000), 4096)
    return wrapper(Recorded("wrapped-iterable", [b"from ", b"an ", b"iterable\n"]))


ROUTES = {
    "/input": input_ops,
    "/bad-header": bad_header,
    "/bad-status": bad_status,
    "/exc-before": exc_info_before_send,
    "/exc-after": exc_info_after_send,
    "/twice": second_start_response,
    "/write": write_only,
    "/write-mixed": write_mixed,
    "/recorded": recorded,
    "/upload": upload_stream,
    "/length": declared_length,
    "/status": status,
    "/own-server": own_server_and_date,
    "/close": connection_close,
    "/file": file_wrapper,
}


def app(environ, start_response):
    route = ROUTES.get(environ["PATH_INFO"], environ_json)
    return route(environ, start_response)
