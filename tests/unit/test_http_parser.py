"""The HTTP/1.1 request parser, driven by the corpus in tests/requests/ and the tables below.

Every case is fed three ways (h11's ``tr()``): whole; one byte at a time (no result until the
last byte, then the same result); and with a pipelined follower request appended (the follower
must be left in the buffer, byte for byte, and parse as the next request). An invalid case must
fail the same way each time and never yield a request — in particular not a smuggled one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from prefork.workers.http import (
    NEED_DATA,
    ChunkedDecoder,
    Limits,
    ParseError,
    Request,
    check_open_line,
    parse_head,
)

CORPUS = Path(__file__).resolve().parents[1] / "requests"
FOLLOWER = b"GET /next HTTP/1.1\r\nHost: f\r\n\r\n"  # fits every case's limits
#: Expectation keys that describe the case rather than the parse result.
META_KEYS = ("note", "limits", "status", "reason")


@dataclass
class Message:
    request: Request
    body: bytes
    trailers: list[tuple[str, str]]


class Connection:
    """What a worker does with the parser: a buffer, a head, then a body framed by CL or chunked."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.buf = bytearray()
        self._request: Request | None = None
        self._decoder: ChunkedDecoder | None = None
        self._body = bytearray()

    def next_message(self) -> Message | None:
        """The next complete request and body from the buffer, or None until more bytes come."""
        if self._request is None:
            result = parse_head(self.buf, self.limits)
            if result is NEED_DATA:
                return None
            self._request, consumed = result
            del self.buf[:consumed]
            if self._request.chunked:
                self._decoder = ChunkedDecoder(self.limits)
        request = self._request
        trailers: list[tuple[str, str]] = []
        if self._decoder is not None:
            self._body += self._decoder.decode(self.buf)
            if not self._decoder.done:
                return None
            trailers = self._decoder.trailers
        else:
            missing = (request.content_length or 0) - len(self._body)
            self._body += self.buf[:missing]
            del self.buf[:missing]
            if len(self._body) < (request.content_length or 0):
                return None
        message = Message(request, bytes(self._body), trailers)
        self._request, self._decoder, self._body = None, None, bytearray()
        return message


def describe(message: Message) -> dict:
    """The message in the vocabulary of the expectation files."""
    request = message.request
    return {
        "method": request.method,
        "target": request.target,
        "path": request.path,
        "query": request.query,
        "version": request.version,
        "headers": [list(field) for field in request.headers],
        "content_length": request.content_length,
        "chunked": request.chunked,
        "keep_alive": request.keep_alive,
        "expect_continue": request.expect_continue,
        "body": message.body.decode("latin-1"),
        "trailers": [list(field) for field in message.trailers],
    }


class Case(NamedTuple):
    name: str
    raw: bytes
    expect: dict  # a subset of describe() for a valid case; {"status", "reason"} for an invalid one

    @property
    def limits(self) -> Limits:
        return Limits(**self.expect.get("limits", {}))

    @property
    def valid(self) -> bool:
        return "status" not in self.expect


def load_corpus(kind: str) -> list[Case]:
    return [
        Case(f"{kind}/{path.stem}", path.read_bytes(),
             json.loads(path.with_suffix(".json").read_text()))
        for path in sorted((CORPUS / kind).glob("*.http"))
    ]


# ---------------------------------------------------------------------------------------------
# Tables. Each row becomes a whole request; the expectation lists only what the row is about.

HOST = b"Host: a\r\n"


def get_with_line(line: bytes) -> bytes:
    return line + b"\r\n" + HOST + b"\r\n"


def get_with_field(field: bytes) -> bytes:
    return b"GET / HTTP/1.1\r\n" + HOST + field + b"\r\n\r\n"


def post(framing: bytes, body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\n" + HOST + framing + b"\r\n\r\n" + body


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked", body)


def valid(name: str, raw: bytes, **expect: object) -> Case:
    return Case(name, raw, expect)


def invalid(name: str, raw: bytes, status: int, reason: str = "", **limits: int) -> Case:
    expect: dict = {"status": status, "reason": reason}
    if limits:
        expect["limits"] = limits
    return Case(name, raw, expect)


REQUEST_LINE_CASES = [
    valid(f"line:{line!r}", get_with_line(line),
          method=method, path=path, query=query, version=version)
    for line, method, path, query, version in [
        (b"GET / HTTP/1.1", "GET", "/", "", "HTTP/1.1"),
        (b"HEAD /index.html HTTP/1.1", "HEAD", "/index.html", "", "HTTP/1.1"),
        (b"DELETE /item/1 HTTP/1.0", "DELETE", "/item/1", "", "HTTP/1.0"),
        (b"PATCH /a?b=c&d=e HTTP/1.1", "PATCH", "/a", "b=c&d=e", "HTTP/1.1"),
        (b"!#$%&'*+-.^_`|~09azAZ / HTTP/1.1", "!#$%&'*+-.^_`|~09azAZ", "/", "", "HTTP/1.1"),
        (b"GET /?x HTTP/1.1", "GET", "/", "x", "HTTP/1.1"),
        (b"GET /a;p=1/b HTTP/1.1", "GET", "/a;p=1/b", "", "HTTP/1.1"),
        (b"GET /~user/@x:y!$&'()*+,;= HTTP/1.1", "GET", "/~user/@x:y!$&'()*+,;=", "", "HTTP/1.1"),
        (b"GET /a|{b}^c HTTP/1.1", "GET", "/a|{b}^c", "", "HTTP/1.1"),
        (b"GET http://a:80 HTTP/1.1", "GET", "/", "", "HTTP/1.1"),
        (b"POST http://[::1]:8080/x/y?z HTTP/1.1", "POST", "/x/y", "z", "HTTP/1.1"),
        (b"OPTIONS * HTTP/1.0", "OPTIONS", "*", "", "HTTP/1.0"),
    ]
]

INVALID_REQUEST_LINE_CASES = [
    invalid(f"line:{line!r}", get_with_line(line), status, reason)
    for line, status, reason in [
        (b"GET / HTTP/1.1 extra", 400, "invalid request line"),
        (b"GET / / HTTP/1.1", 400, "invalid request line"),
        (b"GET / HTTP/1.1\x00", 400, "invalid request line"),
        (b"GET\x00/ HTTP/1.1", 400, "invalid request line"),
        (b"GET /a b HTTP/1.1", 400, "invalid request line"),
        (b"GET /\t HTTP/1.1", 400, "invalid request line"),
        (b"GET / HTTP/1.1\x0b", 400, "invalid request line"),
        (b"GET / HTTP/1.", 400, "invalid request line"),
        (b"GET / HTTP/", 400, "invalid request line"),
        (b"GET / HTTPS/1.1", 400, "invalid request line"),
        (b"GET / Http/1.1", 400, "invalid request line"),
        (b"GET / HTTP/1,1", 400, "invalid request line"),
        (b"GET / HTTP/01.1", 400, "invalid request line"),
        (b"GET / HTTP/3.0", 505, "version not supported"),
        (b"GET / HTTP/1.9", 505, "version not supported"),
        (b"G(E)T / HTTP/1.1", 400, "invalid request line"),
        (b"GET\xa0/ HTTP/1.1", 400, "invalid request line"),
        (b"M-SEARCH * HTTP/1.1", 400, "only for OPTIONS"),
        (b"CONNECT :443 HTTP/1.1", 400, "authority-form"),
        (b"CONNECT user@host:443 HTTP/1.1", 400, "authority-form"),
        (b"CONNECT http://a/ HTTP/1.1", 400, "authority-form"),
        (b"GET ?x HTTP/1.1", 400, "invalid request target"),
        (b"GET http:/a HTTP/1.1", 400, "invalid request target"),
        (b"GET http//a HTTP/1.1", 400, "invalid request target"),
        (b"GET http://a b HTTP/1.1", 400, "invalid request line"),
        (b"GET /a#frag HTTP/1.1", 400, "a fragment (#) is not allowed"),
        (b"GET http://a/#f HTTP/1.1", 400, "a fragment (#) is not allowed"),
        (b"GET /\xc3\xa9 HTTP/1.1", 400, "a byte outside ASCII is not allowed"),
        (b"GET /?q=\xff HTTP/1.1", 400, "a byte outside ASCII is not allowed"),
        (b"GET http://a@b/ HTTP/1.1", 400, "invalid request target"),
        (b"GET http://a\\b/ HTTP/1.1", 400, "invalid request target"),
        (b"GET javascript:alert(1) HTTP/1.1", 400, "invalid request target"),
    ]
]

FIELD_VALUE_CASES = [
    valid(f"value:{value!r}", get_with_field(b"X-V:" + value),
          headers=[["Host", "a"], ["X-V", expected]])
    for value, expected in [
        (b"plain", "plain"),
        (b" one space", "one space"),
        (b"\ttab", "tab"),
        (b"   trailing   ", "trailing"),
        (b" \t mixed \t ", "mixed"),
        (b"", ""),
        (b" ", ""),
        (b"a\tb", "a\tb"),
        (b"a  \t  b", "a  \t  b"),
        (b'"quoted, with comma"', '"quoted, with comma"'),
        (b"!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
        (b"\x80\xff\xe9", "\x80\xff\xe9"),
        (b" \xa0 ", "\xa0"),  # NBSP is obs-text: kept, not stripped as whitespace
        (b"a" * 200, "a" * 200),
    ]
]

INVALID_FIELD_CASES = [
    invalid(f"field:{field!r}", get_with_field(field), 400, reason)
    for field, reason in [
        (b"X-V: a\x00", "invalid character"),
        (b"X-V: \x00a", "invalid character"),
        (b"X-V: a\x1fb", "invalid character"),
        (b"X-V: a\x08b", "invalid character"),
        (b"X-V: a\x0cb", "invalid character"),
        (b"X-V: \x7f", "invalid character"),
        (b"X-V: a\rb", "bare CR"),
        (b"X-V:\ra", "bare CR"),
        (b"X-V: a\nb", "bare LF"),
        (b"X-V\r: a", "bare CR"),
        (b"X-V : a", "whitespace before the colon"),
        (b"X-V\t: a", "whitespace before the colon"),
        (b" X-V: a", "obsolete line folding"),
        (b"\tX-V: a", "obsolete line folding"),
        (b"X V: a", "invalid header field name"),
        (b"X-V\x00: a", "invalid header field name"),
        (b"X-V(: a", "invalid header field name"),
        (b"X-V/: a", "invalid header field name"),
        (b"X-V@: a", "invalid header field name"),
        (b"X-V=: a", "invalid header field name"),
        (b"X-V{}: a", "invalid header field name"),
        (b"\xc3\xa9: a", "invalid header field name"),
        (b": a", "empty header field name"),
        (b":", "empty header field name"),
        (b"X-V", "without a colon"),
        (b"GET / HTTP/1.1", "without a colon"),
    ]
]

CONTENT_LENGTH_CASES = [
    valid(f"cl:{value!r}", post(b"Content-Length:" + value, b"x" * length), content_length=length,
          body="x" * length, chunked=False)
    for value, length in [
        (b"0", 0), (b" 1", 1), (b"10", 10), (b"0010", 10), (b" 3 ", 3), (b"\t2\t", 2),
        (b"3,3", 3), (b"3 , 3,3", 3),
    ]
] + [
    invalid(f"cl:{value!r}", post(b"Content-Length:" + value, b"x" * 4), status, reason)
    for value, status, reason in [
        (b" 1;", 400, "invalid Content-Length"),
        (b" 1e3", 400, "invalid Content-Length"),
        (b" ", 400, "invalid Content-Length"),
        (b" ,", 400, "invalid Content-Length"),
        (b" 3,", 400, "invalid Content-Length"),
        (b" ,3", 400, "invalid Content-Length"),
        (b" 3,4", 400, "conflicting Content-Length"),
        (b" 3, 03, 4", 400, "conflicting Content-Length"),
        (b" 4\x00", 400, "invalid character"),
        (b" 0x4", 400, "invalid Content-Length"),
        (b" 4 4", 400, "invalid Content-Length"),
        (b" \xd9\xa4", 400, "invalid Content-Length"),
        (b" 99999999999999999999", 400, "invalid Content-Length"),
        (b" four", 400, "invalid Content-Length"),
        (b" \"4\"", 400, "invalid Content-Length"),
    ]
]

TRANSFER_ENCODING_CASES = [
    valid(f"te:{value!r}", post(b"Transfer-Encoding:" + value, b"1\r\nx\r\n0\r\n\r\n"), chunked=True,
          content_length=None, body="x")
    for value in [b"chunked", b"Chunked", b" chunked ", b"\tchunked", b"cHuNkEd"]
] + [
    invalid(f"te:{value!r}", post(b"Transfer-Encoding:" + value, b"1\r\nx\r\n0\r\n\r\n"), status, reason)
    for value, status, reason in [
        (b" deflate, chunked", 501, "unsupported transfer coding"),
        (b" compress,chunked", 501, "unsupported transfer coding"),
        (b" x-custom, chunked", 501, "unsupported transfer coding"),
        (b" chunked, identity", 400, "not the final transfer coding"),
        (b" chunked,chunked", 400, "more than once"),
        (b" chunked, gzip, chunked", 400, "more than once"),
        (b" chunk", 400, "not the final transfer coding"),
        (b" chunked chunked", 400, "invalid Transfer-Encoding"),
        (b" , chunked", 400, "invalid Transfer-Encoding"),
        (b" chunked;", 400, "invalid Transfer-Encoding"),
        (b" chunked\x00", 400, "invalid character"),
        (b" \x00chunked", 400, "invalid character"),
        (b" chunked\x0c", 400, "invalid character"),
        (b" ch unked", 400, "invalid Transfer-Encoding"),
    ]
]

CHUNKED_BODY_CASES = [
    valid(f"chunks:{body!r}", chunked(body), chunked=True, body=decoded.decode("latin-1"))
    for body, decoded in [
        (b"0\r\n\r\n", b""),
        (b"1\r\na\r\n0\r\n\r\n", b"a"),
        (b"f\r\n0123456789abcde\r\n0\r\n\r\n", b"0123456789abcde"),
        (b"F\r\n0123456789abcde\r\n0\r\n\r\n", b"0123456789abcde"),
        (b"0000000000000001\r\nz\r\n0\r\n\r\n", b"z"),
        (b"2\r\n\r\n\r\n0\r\n\r\n", b"\r\n"),
        (b"3\r\n\x00\xff\n\r\n0\r\n\r\n", b"\x00\xff\n"),
        (b"1;a\r\nx\r\n1;a=b\r\ny\r\n1;a=\"b;c\"\r\nz\r\n0\r\n\r\n", b"xyz"),
        (b"1\t;\tk\t=\tv\r\nx\r\n0\r\n\r\n", b"x"),
        (b"1;k=\"\\\"\"\r\nx\r\n0\r\n\r\n", b"x"),
        (b"1\r\nx\r\n0;final=yes\r\nA: b\r\n\r\n", b"x"),
    ]
] + [
    invalid(f"chunks:{body!r}", chunked(body), status, reason)
    for body, status, reason in [
        (b"00000000000000001\r\nz\r\n0\r\n\r\n", 400, "invalid chunk size"),
        (b"ffffffffffffffffff\r\n", 400, "invalid chunk size"),
        (b"1;\r\nx\r\n0\r\n\r\n", 400, "invalid chunk size"),
        (b"1;a=\r\nx\r\n0\r\n\r\n", 400, "invalid chunk size"),
        (b"1;a b\r\nx\r\n0\r\n\r\n", 400, "invalid chunk size"),
        (b"1;a=\"b\r\nx\r\n0\r\n\r\n", 400, "invalid chunk size"),
        (b"1;a=b\"\r\nx\r\n0\r\n\r\n", 400, "invalid chunk size"),
        (b"1\r\nx\r\r\n0\r\n\r\n", 400, "not followed by CRLF"),
        (b"1\r\nxx\r\n0\r\n\r\n", 400, "not followed by CRLF"),
        (b"1\r\nx\n\r\n0\r\n\r\n", 400, "not followed by CRLF"),
        (b"2\r\nx\r\n0\r\n\r\n", 400, "not followed by CRLF"),
        (b"1\r\nx\r\n0\r\n\r\r\n", 400, "bare CR"),
        (b"1\r\nx\r\n0\r\n \r\n\r\n", 400, "obsolete line folding"),
        (b"1\r\nx\r\n0\r\nA:b\rc\r\n\r\n", 400, "bare CR"),
        (b"1\r\nx\r\n0\r\n:v\r\n\r\n", 400, "empty header field name"),
        (b"\r\n", 400, "invalid chunk size"),
        (b";\r\nx\r\n0\r\n\r\n", 400, "invalid chunk size"),
        (b"\xff\r\n", 400, "invalid chunk size"),
        (b"\x00\r\n", 400, "invalid chunk size"),
        (b"1\x00\r\nx\r\n0\r\n\r\n", 400, "invalid chunk size"),
    ]
]

LIMIT_CASES = [
    valid("limit:line-exact", get_with_line(b"GET /" + b"a" * 10 + b" HTTP/1.1"),
          path="/" + "a" * 10, limits={"request_line": 24}),
    invalid("limit:line-over", get_with_line(b"GET /" + b"a" * 11 + b" HTTP/1.1"),
            414, "request line too long", request_line=24),
    invalid("limit:line-over-no-crlf", b"GET /" + b"a" * 21,
            414, "request line too long", request_line=24),
    valid("limit:line-at-limit-cr-pending", b"GET /" + b"a" * 10 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
          limits={"request_line": 24}),
    invalid("limit:fields-over", get_with_field(b"B: 1\r\nC: 2"),
            431, "too many header fields", fields=2),
    invalid("limit:fields-over-with-bad-field", get_with_field(b"B: 1\r\nC : 2"),
            431, "too many header fields", fields=2),
    invalid("limit:field-size-over", get_with_field(b"B: " + b"b" * 10),
            431, "header field too long", field_size=12),
    invalid("limit:field-size-over-bad-field", get_with_field(b"B : " + b"b" * 10),
            431, "header field too long", field_size=12),
    valid("limit:field-size-exact", get_with_field(b"B: " + b"b" * 9), limits={"field_size": 12}),
    invalid("limit:body-over", post(b"Content-Length: 11", b"x" * 11), 413, "too large", body=10),
    valid("limit:body-zero-is-unlimited", post(b"Content-Length: 100000", b"x" * 100000),
          content_length=100000, limits={"body": 0}),
    invalid("limit:chunked-body-over", chunked(b"6\r\nxxxxxx\r\n5\r\nxxxxx\r\n0\r\n\r\n"),
            413, "too large", body=10),
    invalid("limit:trailers-over", chunked(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
            431, "too many trailer fields", fields=2),
    # No reason: with the follower appended the head ends, and "too many header fields" is as right.
    invalid("limit:head-too-large", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 30, 431,
            request_line=18, fields=2, field_size=8),
]

TABLE_CASES = (
    REQUEST_LINE_CASES + INVALID_REQUEST_LINE_CASES + FIELD_VALUE_CASES + INVALID_FIELD_CASES
    + CONTENT_LENGTH_CASES + TRANSFER_ENCODING_CASES + CHUNKED_BODY_CASES + LIMIT_CASES
)
ALL_CASES = load_corpus("valid") + load_corpus("invalid") + TABLE_CASES
VALID_CASES = [case for case in ALL_CASES if case.valid]
INVALID_CASES = [case for case in ALL_CASES if not case.valid]


# ---------------------------------------------------------------------------------------------
# The three ways of feeding a case.


def feed_whole(case: Case) -> Message:
    conn = Connection(case.limits)
    conn.buf += case.raw
    message = conn.next_message()
    assert message is not None, "a complete request must not need more data"
    assert conn.buf == b"", "a request must consume exactly its own bytes"
    return message


def feed_bytewise(case: Case) -> Message:
    return _one_byte_at_a_time(case, like_worker=False)


def feed_like_worker(case: Case) -> Message:
    """As the worker's loop does it (Protocol.on_readable): a read without a line end only has
    the open line measured (check_open_line), any other one is parsed."""
    return _one_byte_at_a_time(case, like_worker=True)


def _one_byte_at_a_time(case: Case, like_worker: bool) -> Message:
    conn = Connection(case.limits)
    floor = min(case.limits.request_line, case.limits.field_size)
    for i in range(len(case.raw)):
        byte = case.raw[i:i + 1]
        conn.buf += byte
        if like_worker and conn._request is None and byte != b"\n":
            if len(conn.buf) >= floor:
                check_open_line(conn.buf, case.limits)
            continue
        message = conn.next_message()
        if i < len(case.raw) - 1:
            assert message is None, f"a result after {i + 1} of {len(case.raw)} bytes"
    assert message is not None
    assert conn.buf == b""
    return message


def feed_pipelined(case: Case) -> Message:
    conn = Connection(case.limits)
    conn.buf += case.raw + FOLLOWER
    message = conn.next_message()
    assert message is not None
    assert conn.buf == FOLLOWER, "the pipelined follower must be left untouched"
    follower = conn.next_message()
    assert follower is not None and follower.request.path == "/next" and conn.buf == b""
    return message


FEEDS = [feed_whole, feed_bytewise, feed_like_worker, feed_pipelined]


def case_id(case: Case) -> str:
    return case.name


@pytest.mark.parametrize("feed", FEEDS, ids=lambda feed: feed.__name__)
@pytest.mark.parametrize("case", VALID_CASES, ids=case_id)
def test_valid_request(case: Case, feed: Callable[[Case], Message]) -> None:
    actual = describe(feed(case))
    expected = {key: value for key, value in case.expect.items() if key not in META_KEYS}
    assert {key: actual[key] for key in expected} == expected


@pytest.mark.parametrize("feed", FEEDS, ids=lambda feed: feed.__name__)
@pytest.mark.parametrize("case", INVALID_CASES, ids=case_id)
def test_invalid_request(case: Case, feed: Callable[[Case], Message]) -> None:
    with pytest.raises(ParseError) as caught:
        feed(case)  # fails the test with an AssertionError if a request comes out instead
    assert caught.value.status == case.expect["status"]
    assert case.expect["reason"] in caught.value.reason


# ---------------------------------------------------------------------------------------------
# The corpus itself, and what the tables cannot say.


def test_corpus_is_complete() -> None:
    for kind in ("valid", "invalid"):
        http = {path.stem for path in (CORPUS / kind).glob("*.http")}
        expectations = {path.stem for path in (CORPUS / kind).glob("*.json")}
        assert http == expectations, f"{kind}: every .http needs its .json and vice versa"
    assert len(ALL_CASES) >= 150


def test_corpus_files_keep_crlf() -> None:
    """Guards against a checkout that converted line endings: a valid head has CRLF only."""
    for case in load_corpus("valid"):
        head = case.raw.partition(b"\r\n\r\n")[0]
        assert b"\r\n" in case.raw and head.count(b"\n") == head.count(b"\r\n"), case.name


def test_head_needs_data_until_blank_line() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    for end in range(len(raw)):
        assert parse_head(raw[:end], Limits()) is NEED_DATA
    request, consumed = parse_head(raw, Limits())
    assert consumed == len(raw) and request.path == "/"


@pytest.mark.parametrize("prefix", [b"", b"\r", b"\r\n", b"\r\n\r", b"\r\n\r\n", b"\r\n" * 8])
def test_leading_empty_lines_need_data(prefix: bytes) -> None:
    assert parse_head(prefix, Limits()) is NEED_DATA


def test_consumed_counts_leading_empty_lines() -> None:
    raw = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert parse_head(raw + b"rest", Limits())[1] == len(raw)


def test_parse_head_leaves_buffer_alone() -> None:
    buf = bytearray(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET")
    parse_head(buf, Limits())
    assert buf == b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET"


def test_request_types() -> None:
    request, _ = parse_head(b"GET /p?q HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab", Limits())
    assert type(request.headers) is list and all(type(field) is tuple for field in request.headers)
    assert type(request.content_length) is int and request.content_length == 2
    assert not hasattr(request, "__dict__"), "Request must use __slots__"


def test_parse_error_carries_status_and_reason() -> None:
    with pytest.raises(ParseError) as caught:
        parse_head(b"GET / HTTP/1.1\r\n\r\n", Limits())
    assert (caught.value.status, caught.value.reason) == (400, "missing Host header")
    assert str(caught.value) == "400 missing Host header"


@pytest.mark.parametrize("field", ["request_line", "fields", "field_size"])
def test_zero_limit_means_ceiling(field: str) -> None:
    assert getattr(Limits(**{field: 0}), field) > getattr(Limits(), field)


def test_chunked_decoder_streams_data_as_it_arrives() -> None:
    decoder = ChunkedDecoder(Limits())
    buf = bytearray(b"a\r\n01234")
    assert decoder.decode(buf) == b"01234" and buf == b""
    buf += b"56789\r"
    assert decoder.decode(buf) == b"56789" and buf == b"\r"
    buf += b"\n0\r\nX-T: 1\r\n"
    assert decoder.decode(buf) == b"" and not decoder.done
    buf += b"\r\nNEXT"
    assert decoder.decode(buf) == b"" and decoder.done
    assert decoder.trailers == [("X-T", "1")]
    assert buf == b"NEXT", "bytes after the body belong to the next request"
    assert decoder.decode(buf) == b"" and buf == b"NEXT", "a finished decoder consumes nothing"


def test_chunked_decoder_rejects_size_over_limit_before_data() -> None:
    decoder = ChunkedDecoder(Limits(body=100))
    with pytest.raises(ParseError) as caught:
        decoder.decode(bytearray(b"65\r\n"))  # 101 bytes announced, none sent
    assert caught.value.status == 413


@pytest.mark.parametrize("raw", [
    get_with_field(b"X: a" + b" " * 8000 + b"\x00"),
    get_with_field(b"X:" + b" \t" * 4000 + b"\x00"),
    get_with_field(b"X: " + b"a " * 4000 + b"\x7f"),
    get_with_field(b"X" * 8000 + b" : a"),
    chunked(b"1" + b";a=b" * 1000 + b"\x00\r\n"),
    chunked(b"1;a=\"" + b"\\\"" * 2000 + b"\r\n"),
], ids=["spaces-then-nul", "ows-then-nul", "words-then-del", "long-name-space", "many-exts",
        "quoted-pairs"])
def test_pathological_input_fails_fast(raw: bytes) -> None:
    """Backtracking guard: a regex that went quadratic would take seconds here, not microseconds."""
    started = time.perf_counter()
    with pytest.raises(ParseError):
        feed_whole(Case("slow", raw, {}))
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(("partial", "limits", "status"), [
    (b"GET /" + b"a" * 100, Limits(request_line=100), 414),
    (b"\r\n\r\nGET /" + b"a" * 94, Limits(request_line=100), None),  # empty lines are not the line
    (b"\r\n\r\nGET /" + b"a" * 96, Limits(request_line=100), 414),
    (b"GET /" + b"a" * 95 + b"\r", Limits(request_line=100), None),  # the CR may be half a CRLF
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 98, Limits(field_size=100), 431),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 97, Limits(field_size=100), None),
    # longer than any line may be: found without looking further back than the longest line
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 5000, Limits(request_line=100, field_size=100), 431),
    (b"GET /" + b"a" * 5000, Limits(request_line=100, field_size=100), 414),
    (b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 3 + b"Y", Limits(fields=2), None),  # parse_head's job
], ids=["request-line", "after-empty-lines", "after-empty-lines-over", "pending-cr", "field",
        "field-within", "field-beyond-window", "request-line-beyond-window", "count-not-checked"])
def test_open_line_check(partial: bytes, limits: Limits, status: int | None) -> None:
    """check_open_line: what the worker runs instead of a parse when a read brought no line end."""
    if status is None:
        check_open_line(bytearray(partial), limits)
        return
    with pytest.raises(ParseError) as caught:
        check_open_line(bytearray(partial), limits)
    assert caught.value.status == status


def test_too_many_fields_fail_before_the_head_ends() -> None:
    """A head of many short lines is refused as soon as it has one line too many, not after the
    largest head the limits allow (which a client could make the worker rescan per line)."""
    with pytest.raises(ParseError) as caught:
        parse_head(b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 3, Limits(fields=2))
    assert caught.value.status == 431
    assert parse_head(b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 2, Limits(fields=2)) is NEED_DATA
