"""The app the buffering tests run: large responses of every shape, uploads answered with their
length and hash, and an endless response.

Response bodies are a deterministic pattern (``pattern(size)``) so a client can check that a
parked body arrives whole and in order. Every response iterable logs ``<route> closed`` to
$WSGI_CLOSE_LOG when its close() runs, so a test can count the calls.
"""

import functools
import hashlib
import json
import os
import tempfile
from urllib.parse import parse_qsl

BLOCK = 65536


@functools.lru_cache(maxsize=8)
def pattern(size: int) -> bytes:
    """``size`` bytes whose every 8-byte word is its own index: any loss, duplicate or
    reordering shows. (The tests import it to check what they receive.)"""
    words = (size + 7) // 8
    return b"".join(b"%08x" % (i & 0xFFFFFFFF) for i in range(words))[:size]


def record(event: str) -> None:
    path = os.environ.get("WSGI_CLOSE_LOG")
    if path:
        with open(path, "a") as log:
            log.write(event + "\n")


class Closing:
    """An iterable over ``chunks`` whose close() is recorded."""

    def __init__(self, name, chunks):
        self.name = name
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        record(f"{self.name} closed")


def query(environ):
    return dict(parse_qsl(environ["QUERY_STRING"]))


def big(environ, start_response):
    """?size=N&kind=list|gen|chunked|file: a body of ``pattern(N)``."""
    args = query(environ)
    size = int(args.get("size", 8 << 20))
    kind = args.get("kind", "list")
    body = pattern(size)
    headers = [("Content-Type", "application/octet-stream")]
    if kind != "chunked":
        headers.append(("Content-Length", str(size)))
    start_response("200 OK", headers)
    if kind == "list":
        return Closing("list", [body])
    if kind == "file":
        spool = tempfile.TemporaryFile()
        spool.write(body)
        spool.seek(0)
        wrapper = environ["wsgi.file_wrapper"](spool)
        inner_close = wrapper.close

        def close():
            record("file closed")
            inner_close()
        wrapper.close = close
        return wrapper
    return Closing(kind, (body[i:i + BLOCK] for i in range(0, size, BLOCK)))


def upload(environ, start_response):
    """Reads wsgi.input whole; answers its length, sha256 and the environ's CONTENT_LENGTH."""
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    size = 0
    while data := stream.read(BLOCK):
        digest.update(data)
        size += len(data)
    body = json.dumps({"size": size, "sha256": digest.hexdigest(),
                       "CONTENT_LENGTH": environ.get("CONTENT_LENGTH"),
                       "seekable": stream.seekable() if hasattr(stream, "seekable") else False}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return Closing("upload", [body])


def endless(environ, start_response):
    """A response that never ends (server-sent events); ?stream=1 asks for no buffering."""
    headers = [("Content-Type", "text/event-stream")]
    if query(environ).get("stream"):
        headers.append(("X-Accel-Buffering", "no"))
    start_response("200 OK", headers)

    def events():
        block = b"data: " + b"e" * (BLOCK - 8) + b"\n\n"
        while True:
            yield block
    return Closing("endless", events())


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return [b"hello\n"]


def pid(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


ROUTES = {"/big": big, "/upload": upload, "/endless": endless, "/pid": pid}


def app(environ, start_response):
    return ROUTES.get(environ["PATH_INFO"], hello)(environ, start_response)
