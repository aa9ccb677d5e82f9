"""The app of the slow-clients case in `scripts/bench.py`: a big download, a checked upload, hello.

It lives apart from wsgi_app.py because its download body is megabytes: importing it in every
case would add that to every server's memory figures.

    GET /                  Hello, World!
    GET /download?size=N   N bytes (default 8 MiB) of deterministic content(N), in 64 KiB chunks
    POST /upload           reads the whole body; answers {"length": ..., "sha256": ...}

The benchmark imports this file too, so it checks each download against the same content().
"""

import functools
import hashlib
import json
import random
from urllib.parse import parse_qs

HELLO_BODY = b"Hello, World!"
DOWNLOAD_BYTES = 8 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
CHUNK_BYTES = 64 * 1024  # the app yields a download as a file-serving app would, a chunk at a time
MAX_UPLOAD_BYTES = 16 * 1024 * 1024


@functools.lru_cache(maxsize=4)
def content(size: int) -> bytes:
    """The same `size` bytes every time, in every process; random so that no layer can compress them."""
    return random.Random(size).randbytes(size)


def _respond(start_response, status: str, body_length: int, content_type: str) -> None:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(body_length))])


def _download(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    size = int(query.get("size", [DOWNLOAD_BYTES])[0])
    if not 0 <= size <= MAX_DOWNLOAD_BYTES:
        _respond(start_response, "400 Bad Request", 0, "text/plain")
        return [b""]
    body = memoryview(content(size))
    _respond(start_response, "200 OK", size, "application/octet-stream")
    return (bytes(body[offset:offset + CHUNK_BYTES]) for offset in range(0, size, CHUNK_BYTES))


def _upload(environ, start_response):
    """Hashes the body as it is read: what arrived is checked by the client, not trusted."""
    remaining = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_UPLOAD_BYTES)
    digest = hashlib.sha256()
    length = 0
    stream = environ["wsgi.input"]
    while remaining > 0:
        chunk = stream.read(min(remaining, CHUNK_BYTES))
        if not chunk:
            break
        digest.update(chunk)
        length += len(chunk)
        remaining -= len(chunk)
    body = json.dumps({"length": length, "sha256": digest.hexdigest()}).encode()
    _respond(start_response, "200 OK", len(body), "application/json")
    return [body]


def _hello(environ, start_response):
    _respond(start_response, "200 OK", len(HELLO_BODY), "text/plain")
    return [HELLO_BODY]


ROUTES = {("GET", "/"): _hello, ("GET", "/download"): _download, ("POST", "/upload"): _upload}


def app(environ, start_response):
    handler = ROUTES.get((environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
    if handler is None:
        _respond(start_response, "404 Not Found", 0, "text/plain")
        return [b""]
    return handler(environ, start_response)
