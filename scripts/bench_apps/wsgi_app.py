"""The WSGI applications every server runs in `scripts/bench.py`: one file, one callable per case.

Every server imports this same file, so a difference in the numbers is the server's, not the
app's. Each response has a fixed size (Content-Length set, no per-request variation), which is
what lets the benchmark turn bytes received per connection into responses per connection.
"""

import json
import time

HELLO_BODY = b"Hello, World!"
JSON_TARGET_BYTES = 16 * 1024
BIG_BODY = b"x" * (1024 * 1024)
IO_WAIT_SECONDS = 0.01
MAX_ECHO_BYTES = 64 * 1024


def _records_for_size(target: int) -> list[dict]:
    """A list of small records whose JSON encoding is just over `target` bytes: a typical API payload."""
    records: list[dict] = []
    size = 2
    while size < target:
        record = {"id": len(records), "name": f"item-{len(records)}", "price": 9.99, "tags": ["a", "b"]}
        records.append(record)
        size += len(json.dumps(record)) + 2
    return records


JSON_RECORDS = _records_for_size(JSON_TARGET_BYTES)


def _respond(start_response, body: bytes, content_type: str) -> list[bytes]:
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def hello(environ, start_response):
    """The smallest useful response: measures the server's per-request overhead."""
    return _respond(start_response, HELLO_BODY, "text/plain")


def json16k(environ, start_response):
    """Encodes ~16 KiB of JSON per request, as an API endpoint would, then sends it."""
    return _respond(start_response, json.dumps(JSON_RECORDS).encode(), "application/json")


def big1m(environ, start_response):
    """A prebuilt 1 MiB body: measures how the server moves large responses to the socket."""
    return _respond(start_response, BIG_BODY, "application/octet-stream")


def echo(environ, start_response):
    """Reads the request body through wsgi.input and sends it back."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(min(length, MAX_ECHO_BYTES))
    return _respond(start_response, body, "application/octet-stream")


def io(environ, start_response):
    """Waits 10 ms as if on a database: measures concurrency (threads), not parsing speed."""
    time.sleep(IO_WAIT_SECONDS)
    return _respond(start_response, HELLO_BODY, "text/plain")
