"""wsgi.input through prefork's worker in this process (the ``in_process`` fixture): every read method, both framings, bodies split across packets,
and never a byte past the body — the pipelined request behind it is always answered intact.

The app (tests/apps/wsgi_cases.py, ``/input?ops=...``) runs the named reads and returns their
results as JSON; ``expected`` below is computed with io.BytesIO, the reference file object.
"""

from __future__ import annotations

import io
import json
import time

import pytest

APP = "wsgi_cases:app"
FOLLOWER = b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n"

BODY = b"first line\nsecond\n\nfourth line is a little longer\nno newline at the end"


def reference(body: bytes, ops: str) -> list:
    """What a file object over ``body`` returns for ``ops`` (the app's little language)."""
    stream = io.BytesIO(body)
    results = []
    for op in ops.split(","):
        name, _, arg = op.partition(":")
        args = (int(arg),) if arg else ()
        value = list(stream) if name == "iter" else getattr(stream, name)(*args)
        results.append([v.decode("latin-1") for v in value] if isinstance(value, list) else value.decode("latin-1"))
    return results


def chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def framed(body: bytes, framing: str, ops: str) -> tuple[bytes, bytes]:
    """(head, encoded body) of a POST to /input."""
    head = b"POST /input?ops=%s HTTP/1.1\r\nHost: t\r\n" % ops.encode()
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body), body
    return head + b"Transfer-Encoding: chunked\r\n\r\n", chunked(body, 7)


OPS = [
    "read",
    "read:-1",
    "read:5,read:5,read",
    "read:0,read:1000,read",
    "readline,readline,readline,readline,readline,readline",
    "readline:3,readline:100,readline:0,readline",
    "readlines",
    "readlines:15,readlines",
    "iter",
    "read:4,iter",
    "readline,read:7,readlines",
]


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_every_read_method_matches_a_file_object_and_stops_at_the_body(in_process, framing):
    client = in_process(APP).connect()
    for ops in OPS:
        head, body = framed(BODY, framing, ops)
        client.send(head + body + FOLLOWER)  # the follower arrives with the body
        response, follower = client.responses(2)
        assert response.status == 200, response.body
        assert json.loads(response.body) == reference(BODY, ops), ops
        assert follower.status == 200 and json.loads(follower.body)["PATH_INFO"] == "/after"


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("split", [0, 1, 10, 5000, 69_999])
def test_reads_straddling_what_came_with_the_head(in_process, framing, split):
    """The first ``split`` bytes of the encoded body arrive with the head; the rest (and the
    follower) later, so reads of 1000 and 65536 bytes span the buffer and the socket."""
    client = in_process(APP).connect()
    body = bytes(range(256)) * 400 + b"\nlast line\n"  # 102 KiB, every byte value
    ops = "read:1000,readline,read:65536,readlines:1,read"
    head, encoded = framed(body, framing, ops)
    client.send(head + encoded[:split])  # the worker takes it in before the rest is sent
    client.send(encoded[split:] + FOLLOWER)
    response, follower = client.responses(2)
    assert response.status == 200, response.body
    assert json.loads(response.body) == reference(body, ops)
    assert json.loads(follower.body)["PATH_INFO"] == "/after"


def test_body_arriving_in_many_small_packets(in_process):
    server = in_process(APP)
    ops = "readline,read:3,iter"
    for framing in ("length", "chunked"):
        head, encoded = framed(BODY, framing, ops)
        client = server.connect().send(head)
        for i in range(0, len(encoded), 9):
            client.send(encoded[i:i + 9])  # each piece is a recv of its own
        client.send(FOLLOWER)
        response, follower = client.responses(2)
        assert json.loads(response.body) == reference(BODY, ops)
        assert follower.status == 200


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("options, size", [((), 100_000), (("--no-request-buffering",), 20_000)],
                         ids=["buffered", "unbuffered"])
def test_unread_body_all_here_is_discarded_and_the_connection_reused(in_process, options, size, framing):
    """Buffered, or unbuffered with the rest of the body come with the head: nothing to wait
    for, so keep-alive holds and the pipelined request behind the body is answered."""
    client = in_process(APP, *options).connect()
    head, encoded = framed(b"x" * size, framing, "read:10")
    client.send(head + encoded + FOLLOWER)
    first, follower = client.responses(2)
    assert first.status == 200 and first.header("Connection") is None
    assert json.loads(first.body) == ["x" * 10]
    assert json.loads(follower.body)["PATH_INFO"] == "/after"


def test_a_large_unread_body_closes_the_connection_and_says_so(in_process):
    """Unbuffered (the app reads from the socket): the rest is not worth draining."""
    server = in_process(APP, "--no-request-buffering")
    client = server.request(b"POST /input?ops=read:10 HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\n"
                            + b"x" * 100)
    response = client.response()
    assert response.status == 200 and response.header("Connection") == "close"
    assert client.closed


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_unbuffered_unread_body_not_all_here_closes_at_once_and_says_so(in_process, framing):
    """Part of a small body is missing when the app is done: the worker does not wait for it
    (a trickling client would hold it), the head says Connection: close, and it closes."""
    server = in_process(APP, "--no-request-buffering", "--body-timeout", "2")
    head, encoded = framed(b"x" * 100, framing, "read:10")
    started = time.monotonic()
    client = server.request(head + encoded[:50])
    response = client.response()
    assert response.status == 200 and response.header("Connection") == "close"
    assert json.loads(response.body) == ["x" * 10]
    assert client.closed and time.monotonic() - started < 1


def test_expect_continue_not_read_closes_without_100(in_process):
    """Unbuffered: 100 Continue goes out only when the app reads, so an app that answers by
    the headers alone never invites the body."""
    server = in_process(APP, "--no-request-buffering")
    client = server.request(b"POST /environ HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    response = client.response()
    assert response.status == 200 and response.header("Connection") == "close"
    assert client.closed


def test_chunked_body_over_the_limit_is_413_while_the_app_reads(in_process):
    server = in_process(APP, "--limit-request-body", "100")
    head, encoded = framed(b"z" * 150, "chunked", "read")
    client = server.request(head + encoded + FOLLOWER)
    assert client.response().status == 413
    assert client.closed and client.rest() == b"", "the request after a rejected body must never be answered"
    head, encoded = framed(b"z" * 100, "chunked", "read")
    assert json.loads(server.request(head + encoded).response().body) == ["z" * 100]


def test_bad_chunking_met_by_the_app_is_400_and_closes(in_process):
    client = in_process(APP).request(b"POST /input?ops=read HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"5\r\nabc\r\n0\r\n\r\n" + FOLLOWER)
    assert client.response().status == 400
    assert client.closed and client.rest() == b""
