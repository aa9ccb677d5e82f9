"""Property tests for the HTTP/1.1 parser: hostile bytes only ever raise ParseError, anything it
accepts obeys the grammar, and well-formed requests come back exactly as they were built.

Runs are bounded (``max_examples``) so the file stays well under 30 s on a shared machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefork.workers.http import ChunkedDecoder, Limits, ParseError, parse_head
from test_http_parser import VALID_CASES, Connection, Message

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Small limits reach the limit checks often; default limits reach everything else.
LIMITS = st.sampled_from([
    Limits(),
    Limits(request_line=40, fields=4, field_size=40, body=64),
])
ERROR_STATUSES = {400, 413, 414, 417, 431, 501, 505}

# The grammar, written independently of the parser's regexes (RFC 9110 §5.6.2, §5.5).
TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
VCHARS = "".join(map(chr, range(0x21, 0x7F))) + "".join(map(chr, range(0x80, 0x100)))
TARGET_CHARS = "".join(char for char in VCHARS if char < "\x7f" and char != "#")
TOKEN = re.compile("[" + re.escape(TCHARS) + "]+")
FIELD_VALUE = re.compile(r"(?:[^\x00-\x20\x7f](?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x20\x7f])?)?")
TARGET = re.compile(r"[^\x00-\x20#\x7f-\xff]+")  # RFC 9112 §3.2: no fragment, no obs-text


def run(data: bytes, limits: Limits, cuts: list[int]) -> list[Message]:
    """Feed ``data`` in pieces of the given sizes (the rest at the end); collect every message.

    Returns the messages parsed before the data ran out or a ParseError ended the connection;
    any other exception fails the test.
    """
    conn = Connection(limits)
    messages: list[Message] = []
    pieces = []
    offset = 0
    for size in cuts:
        pieces.append(data[offset:offset + size])
        offset += size
    pieces.append(data[offset:])
    try:
        for piece in pieces:
            conn.buf += piece
            while (message := conn.next_message()) is not None:
                messages.append(message)
    except ParseError as error:
        assert error.status in ERROR_STATUSES and error.reason
    return messages


def assert_well_formed(message: Message) -> None:
    """What strictness promises about anything the parser lets through."""
    request = message.request
    assert TOKEN.fullmatch(request.method)
    assert TARGET.fullmatch(request.target)
    assert request.version in ("HTTP/1.0", "HTTP/1.1")
    for name, value in request.headers + message.trailers:
        assert TOKEN.fullmatch(name), name
        assert FIELD_VALUE.fullmatch(value), value
    names = [name.lower() for name, _ in request.headers]
    if request.version == "HTTP/1.1":
        assert names.count("host") == 1
    if request.chunked:
        assert request.version == "HTTP/1.1" and request.content_length is None
        assert "content-length" not in names
    elif request.content_length is not None:
        assert len(message.body) == request.content_length
    else:
        assert message.body == b"" and "transfer-encoding" not in names


CUTS = st.lists(st.integers(min_value=1, max_value=64), max_size=12)


@FUZZ
@given(data=st.binary(max_size=600), limits=LIMITS, cuts=CUTS)
def test_arbitrary_bytes_only_raise_parse_error(data: bytes, limits: Limits,
                                                cuts: list[int]) -> None:
    for message in run(data, limits, cuts):
        assert_well_formed(message)
    assert head_outcome(data, limits) == head_outcome(bytearray(data), limits)


def head_outcome(buf: bytes | bytearray, limits: Limits) -> object:
    """parse_head's answer in a comparable form: the result, or the error's status and reason."""
    try:
        return parse_head(buf, limits)
    except ParseError as error:
        return error.status, error.reason


HEADS = st.sampled_from([
    b"GET / HTTP/1.1\r\nHost: a\r\n",
    b"POST /p?q HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
    b"GET / HTTP/1.",
    b"\r\n",
])


@FUZZ
@given(head=HEADS, data=st.binary(max_size=400), limits=LIMITS, cuts=CUTS)
def test_bytes_after_a_valid_prefix_only_raise_parse_error(head: bytes, data: bytes, limits: Limits,
                                                           cuts: list[int]) -> None:
    """Random bytes rarely get past a request line; a valid prefix takes them deeper."""
    for message in run(head + data, limits, cuts):
        assert_well_formed(message)


@FUZZ
@given(data=st.binary(max_size=400), limits=LIMITS, cuts=CUTS)
def test_chunked_decoder_only_raises_parse_error(data: bytes, limits: Limits,
                                                 cuts: list[int]) -> None:
    decoder = ChunkedDecoder(limits)
    buf = bytearray()
    offset = 0
    try:
        for size in [*cuts, len(data)]:
            buf += data[offset:offset + size]
            offset += size
            decoder.decode(buf)
    except ParseError as error:
        assert error.status in ERROR_STATUSES
    for name, value in decoder.trailers:
        assert TOKEN.fullmatch(name) and FIELD_VALUE.fullmatch(value)


INTERESTING_BYTES = b"\x00\t\n\r :,;\"\\\x7f\x80\xff0aAzZ"
CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])  # CTL except HTAB
MUTATIONS = ["flip", "set", "insert", "delete", "truncate", "duplicate"]


@st.composite
def mutated(draw, raw: bytes) -> bytes:
    """``raw`` after one to four byte flips, replacements, insertions, deletions, truncations."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(MUTATIONS))
        at = draw(st.integers(0, len(data)))
        span = draw(st.integers(1, 8))
        byte = draw(st.sampled_from(INTERESTING_BYTES) | st.sampled_from(CONTROL_BYTES)
                    | st.integers(0, 255))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and at < len(data):
            data[at] = byte
        elif op == "insert":
            data[at:at] = bytes([byte]) * span
        elif op == "delete":
            del data[at:at + span]
        elif op == "truncate":
            del data[at:]
        elif op == "duplicate":
            data[at:at] = data[at:at + span]
    return bytes(data)


@FUZZ
@given(data=st.data(), cuts=CUTS)
def test_mutated_valid_requests_only_raise_parse_error(data: st.DataObject,
                                                       cuts: list[int]) -> None:
    case = data.draw(st.sampled_from(VALID_CASES), label="case")
    raw = data.draw(mutated(case.raw), label="mutated")
    for message in run(raw, case.limits, cuts):
        assert_well_formed(message)


# ---------------------------------------------------------------------------------------------
# Round trip: build a well-formed request, parse it, get back what was built.


@dataclass
class Built:
    raw: bytes
    head_size: int  # leading empty lines and the final blank line included
    method: str
    target: str
    path: str
    query: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool
    content_length: int | None
    keep_alive: bool
    trailers: list[tuple[str, str]]


def text(alphabet: str, min_size: int = 0, max_size: int = 20) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=min_size, max_size=max_size)


TOKENS = text(TCHARS, 1, 12)
OWS = st.sampled_from(["", " ", "\t", "  ", " \t "])
FIELD_VALUES = text(VCHARS + " \t", 0, 30).map(lambda value: value.strip(" \t"))
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "expect"}
FIELD_NAMES = TOKENS.filter(lambda name: name.lower() not in SPECIAL)
HOSTS = st.sampled_from(["example.com", "localhost:8000", "127.0.0.1", "[::1]:8080", "", "a-b.c~e:1"])


@st.composite
def field_lines(draw, fields: list[tuple[str, str]]) -> str:
    return "".join(f"{name}:{draw(OWS)}{value}{draw(OWS)}\r\n" for name, value in fields)


@st.composite
def requests(draw) -> Built:
    version = draw(st.sampled_from(["HTTP/1.0", "HTTP/1.1"]))
    methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]) | TOKENS
    method = draw(methods.filter(lambda name: name != "CONNECT"))
    path = "/" + draw(text(TARGET_CHARS.replace("?", ""), 0, 30))
    query = draw(st.none() | text(TARGET_CHARS, 0, 30))
    target = path if query is None else f"{path}?{query}"
    headers = draw(st.lists(st.tuples(FIELD_NAMES, FIELD_VALUES), max_size=6))
    if version == "HTTP/1.1" or draw(st.booleans()):
        host = (draw(st.sampled_from(["Host", "host"])), draw(HOSTS))
        headers.insert(draw(st.integers(0, len(headers))), host)
    connection = draw(st.sampled_from([None, "close", "keep-alive", "Keep-Alive", "Upgrade"]))
    if connection is not None:
        headers.append(("Connection", connection))
    keep_alive = connection != "close" and (
        version == "HTTP/1.1" or connection in ("keep-alive", "Keep-Alive"))

    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked"] if version == "HTTP/1.1" else ["length"]))
    if not body and draw(st.booleans()):
        framing = "none"
    trailers: list[tuple[str, str]] = []
    content_length = None
    if framing == "length":
        content_length = len(body)
        headers.append(("Content-Length", str(len(body))))
        encoded = body
    elif framing == "chunked":
        coding = draw(st.sampled_from(["chunked", "Chunked", "CHUNKED"]))
        headers.append(("Transfer-Encoding", coding))
        encoded = draw(chunked_body(body))
        trailers = draw(st.lists(st.tuples(FIELD_NAMES, FIELD_VALUES), max_size=3))
        encoded += draw(field_lines(trailers)).encode("latin-1") + b"\r\n"
    else:
        encoded = b""
    leading = "\r\n" * draw(st.integers(0, 2))
    head = f"{leading}{method} {target} {version}\r\n" + draw(field_lines(headers)) + "\r\n"
    return Built(head.encode("latin-1") + encoded, len(head), method, target, path, query or "",
                 version, headers, body, framing == "chunked", content_length, keep_alive, trailers)


@st.composite
def chunked_body(draw, body: bytes) -> bytes:
    """``body`` as chunks of random sizes with random extensions, up to the last-chunk line."""
    out = bytearray()
    offset = 0
    while offset < len(body):
        size = draw(st.integers(1, len(body) - offset))
        digits = draw(st.sampled_from(["{:x}", "{:X}", "{:04x}"])).format(size)
        extension = draw(st.sampled_from(["", ";a", ";a=b", ' ; name = "q \\" v"']))
        out += f"{digits}{extension}\r\n".encode() + body[offset:offset + size] + b"\r\n"
        offset += size
    out += draw(st.sampled_from([b"0", b"000", b"0;end"])) + b"\r\n"
    return bytes(out)


@FUZZ
@given(built=requests(), cuts=CUTS)
def test_generated_requests_round_trip(built: Built, cuts: list[int]) -> None:
    follower = b"GET /next HTTP/1.1\r\nHost: f\r\n\r\n"
    messages = run(built.raw + follower, Limits(), cuts)
    assert len(messages) == 2, "a well-formed request and its follower both parse"
    message = messages[0]
    request = message.request
    assert (request.method, request.target, request.path, request.query, request.version) == (
        built.method, built.target, built.path, built.query, built.version)
    assert request.headers == built.headers
    assert (request.chunked, request.content_length, request.keep_alive) == (
        built.chunked, built.content_length, built.keep_alive)
    assert message.body == built.body
    assert message.trailers == built.trailers
    assert messages[1].request.path == "/next"


@FUZZ
@given(built=requests(), data=st.data())
def test_control_byte_anywhere_in_head_is_rejected(built: Built, data: st.DataObject) -> None:
    """No single CTL byte (HTAB aside), bare CR and bare LF included, fits anywhere in a head."""
    # Before the final CRLF: an LF put between its CR and LF would itself end the head
    # ("\r\n\r" + "\n"), leaving a well-formed request whose body starts with the displaced LF.
    at = data.draw(st.integers(0, built.head_size - 2), label="at")
    byte = data.draw(st.sampled_from(CONTROL_BYTES), label="byte")
    raw = built.raw[:at] + bytes([byte]) + built.raw[at:]
    assert run(raw, Limits(), []) == [], f"accepted {raw!r}"


NON_TCHARS = bytes(byte for byte in range(0x100) if chr(byte) not in TCHARS and byte != ord(":"))


@FUZZ
@given(built=requests(), data=st.data())
def test_non_token_byte_in_field_name_is_rejected(built: Built, data: st.DataObject) -> None:
    """Whitespace, separators, controls or obs-text inside or around a field name: never a field."""
    if not built.headers:
        return  # no field line to damage
    lines = built.raw[:built.head_size].split(b"\r\n")
    fields = lines[-2 - len(built.headers):-2]  # before the blank line and the split's final b""
    index = data.draw(st.integers(0, len(fields) - 1), label="field")
    line = fields[index]
    colon = line.index(b":")
    # The ends matter most: a leading SP is obs-fold, a trailing one sits before the colon.
    at = data.draw(st.sampled_from([0, colon]) | st.integers(0, colon), label="at")
    byte = data.draw(st.sampled_from(b" \t") | st.sampled_from(NON_TCHARS), label="byte")
    fields[index] = line[:at] + bytes([byte]) + line[at:]
    lines[-2 - len(built.headers):-2] = fields
    raw = b"\r\n".join(lines) + built.raw[built.head_size:]
    assert run(raw, Limits(), []) == [], f"accepted {raw!r}"
