"""HTTP/1.1 request parsing, sans-IO: bytes in; a Request, NEED_DATA or a ParseError out.

This module never touches a socket, a clock or a logger, so it can be tested by feeding it
bytes, and a hostile client can only ever make it raise ``ParseError``.

Theory of operation
-------------------
The worker appends what it receives to a per-connection buffer and calls ``parse_head(buf,
limits)``. The head is complete when a blank line (CRLF CRLF) has arrived; until then the answer
is ``NEED_DATA``, unless the bytes already buffered can never become a valid head (a request line
or field line over its limit, a bare CR or LF, a malformed request line), in which case it raises
at once so a client cannot make us wait or buffer for a head we will reject. A complete head is
decoded once (latin-1, which maps bytes 1:1 to code points, as PEP 3333 wants) and checked by one
regex for the request line and one ``findall`` over all field lines. The framing fields are then
interpreted; the body is the caller's: ``Request.content_length`` bytes, or a ``ChunkedDecoder``.

Decisions where RFC 9112 / RFC 9110 leave a choice (all err on the side of rejecting, because
request smuggling lives exactly where a proxy and a server read the same bytes differently):

* Line terminator: CRLF only. A bare LF or bare CR anywhere in the head, in a chunk-size line or
  in a trailer is a 400 (RFC 9112 §2.2 lets a recipient accept a bare LF; we don't).
* Up to ``MAX_LEADING_EMPTY_LINES`` empty lines before the request line are skipped (RFC 9112 §2.2
  says at least one: some clients send a CRLF after a POST body).
* obs-fold (a field line starting with SP or HTAB) is a 400 (RFC 9112 §5.2 allows rejecting it);
  so is whitespace between the request line and the first field (RFC 9112 §2.2).
* Request target: visible ASCII except "#", no whitespace, controls or bytes >= 0x80 (a URI
  has neither a fragment on the wire nor raw non-ASCII: RFC 9112 §3.2, RFC 3986 §2); finer
  URI syntax is the application's business: real clients send some characters RFC 3986
  leaves out (`|`, `{`, `^`) raw. origin-form for every
  method except CONNECT (authority-form only), asterisk-form only with OPTIONS, absolute-form
  ``http(s)://authority[path][?query]`` for any method (RFC 9112 §3.2). For absolute-form the
  target's authority outranks Host (RFC 9112 §3.2.2): ``Request.target`` keeps it for the caller.
* Host: exactly one on HTTP/1.1, at most one on HTTP/1.0 (RFC 9112 §3.2); its value must be
  ``uri-host [":" port]`` built from reg-name characters or a bracketed IP literal, or empty
  (RFC 9110 §7.2). Whitespace, "/", and userinfo ("@", deprecated by RFC 9110 §4.2.4) are 400s.
* Framing fields are parsed strictly, stricter than the list syntax of RFC 9110 §5.6.1 (no empty
  list elements): Content-Length is ``1*DIGIT`` (at most 18 digits); repeated or listed values
  must all be equal (RFC 9110 §8.6). Transfer-Encoding must end in ``chunked``, and ``chunked``
  must appear once (400, RFC 9112 §6.1, §6.3); any other coding is a 501 because we decode only
  chunked. Transfer-Encoding with Content-Length, or on HTTP/1.0, is a 400 (RFC 9112 §6.1, §6.3).
* Expect: only ``100-continue`` (any case); anything else is a 417 (RFC 9110 §10.1.1). On
  HTTP/1.0 a 100-continue expectation is ignored, as that section requires.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Literal, NamedTuple, NoReturn

__all__ = ["ChunkedDecoder", "Limits", "NEED_DATA", "ParseError", "Request", "check_open_line",
           "max_head_size", "parse_head"]

#: Empty lines (CRLF) skipped before a request line; more is a 400.
MAX_LEADING_EMPTY_LINES = 8
#: Longest chunk-size line, extensions included (h11 and nginx use a few KiB too).
MAX_CHUNK_LINE = 4096
#: Longest chunk-size in hex digits: 16 digits cover a 64-bit length, more is an overflow attempt.
MAX_CHUNK_SIZE_DIGITS = 16
#: Longest Content-Length in decimal digits: 10**18 bytes is beyond any body, and stays an int64.
MAX_CONTENT_LENGTH_DIGITS = 18
#: What a ``Limits`` field of 0 stands for (gunicorn treats 0 as "no limit"; we keep a ceiling).
REQUEST_LINE_CEILING = 65536
FIELDS_CEILING = 32768
FIELD_SIZE_CEILING = 65536


class ParseError(Exception):
    """The request is malformed or over a limit; ``status`` is the response it deserves.

    Statuses: 400, 413, 414, 417, 431, 501, 505. ``reason`` is one of this module's fixed
    phrases and never echoes client bytes, so it is safe to put in the response body.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


class Incomplete(enum.Enum):
    """A head that is not all there yet is an answer, not an error (h11's NEED_DATA)."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = Incomplete.NEED_DATA


@dataclass(slots=True)
class Limits:
    """Size limits, named after gunicorn's ``limit_request_*`` settings.

    ``request_line``: longest request line, CRLF excluded (414). ``fields``: most header fields
    (431). ``field_size``: longest field line, CRLF excluded (431). ``body``: largest body, 0 for
    unlimited (413). A 0 for the first three means the module's ceiling, as gunicorn's 0 means
    "unlimited" there: a head must stay bounded whatever the configuration says.
    """

    request_line: int = 4094
    fields: int = 100
    field_size: int = 8190
    body: int = 0

    def __post_init__(self) -> None:
        if self.request_line <= 0:
            self.request_line = REQUEST_LINE_CEILING
        if self.fields <= 0:
            self.fields = FIELDS_CEILING
        if self.field_size <= 0:
            self.field_size = FIELD_SIZE_CEILING


class Request(NamedTuple):
    """One parsed request head. Strings are latin-1 decoded and otherwise as sent. A named
    tuple: immutable, and built by one C call per request (parse_head is the hot path)."""

    method: str
    target: str
    path: str  # not percent-decoded; "*" for OPTIONS *, "" for CONNECT
    query: str  # without the "?"
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: list[tuple[str, str]]  # (name as sent, value without surrounding OWS), in order
    content_length: int | None  # set when Content-Length frames the body
    chunked: bool  # Transfer-Encoding: chunked frames the body
    keep_alive: bool
    expect_continue: bool


# ---------------------------------------------------------------------------------------------
# Grammar. ABNF from RFC 9110 (semantics) and RFC 9112 (HTTP/1.1) above each regex.
# https://www.rfc-editor.org/rfc/rfc9110  https://www.rfc-editor.org/rfc/rfc9112

# token = 1*tchar                                                           (RFC 9110 §5.6.2)
# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|"
#       / "~" / DIGIT / ALPHA
_TCHAR = r"[-!#$%&'*+.^_`|~0-9A-Za-z]"
# field-vchar = VCHAR / obs-text                                            (RFC 9110 §5.5)
_VCHAR = r"[\x21-\x7e\x80-\xff]"

# request-line = method SP request-target SP HTTP-version                   (RFC 9112 §3)
# method       = token                                                      (RFC 9110 §9.1)
# HTTP-version = HTTP-name "/" DIGIT "." DIGIT ; HTTP-name = %s"HTTP"       (RFC 9112 §2.3)
# origin-form   = absolute-path [ "?" query ]                              (RFC 9112 §3.2.1)
# absolute-path = 1*( "/" segment ) ; segment = *pchar ; query = *( pchar / "/" / "?" )
# pchar         = unreserved / pct-encoded / sub-delims / ":" / "@"        (RFC 3986 §3.3)
# Deviation: request-target is any run of VCHAR but "#" here (no fragment, no obs-text); its
# form is checked after. Looser than pchar: clients send `|`, `{`, `^` and the like unencoded.
_TARGET_CHAR = r"[\x21\x22\x24-\x7e]"
_REQUEST_LINE_RE = re.compile(rf"({_TCHAR}+) ({_TARGET_CHAR}+) (HTTP/1\.[01])")
# The same line with any field-vchar in the target: it failed on the target's characters.
_BAD_TARGET_LINE_RE = re.compile(rf"{_TCHAR}+ ({_VCHAR}+) HTTP/1\.[01]")
# A well-formed request line for a version we don't speak: 505, not 400.
_OTHER_VERSION_RE = re.compile(rf"{_TCHAR}+ {_VCHAR}+ HTTP/[0-9]\.[0-9]")

# field-line    = field-name ":" OWS field-value OWS                        (RFC 9112 §5)
# field-name    = token                                                     (RFC 9110 §5.1)
# field-value   = *field-content                                            (RFC 9110 §5.5)
# field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
# OWS           = *( SP / HTAB )                                            (RFC 9110 §5.6.3)
# One match per line, anchored at the line start; group 2 is the value without OWS. Possessive
# quantifiers keep it linear: a value of spaces followed by a bad byte cannot backtrack. A
# repeated group is made atomic with (?>...)* rather than (...)*+: CPython before 3.11.5 (Debian
# 12's 3.11.2) gets a possessive repeat of a group wrong and kept trailing OWS in the value.
_FIELD_RE = re.compile(
    rf"(?m)^({_TCHAR}++):[ \t]*+((?>(?:[ \t]*+{_VCHAR}++)*))[ \t]*+\r\n"
)

# Host     = uri-host [ ":" port ]                                          (RFC 9110 §7.2)
# uri-host = IP-literal / IPv4address / reg-name                            (RFC 3986 §3.2.2)
# reg-name = *( unreserved / pct-encoded / sub-delims ) ; port = *DIGIT
# Deviation: loose — IP-literal is any bracketed run of hex, ":" and "."-ish characters, and
# pct-encoded is not checked for two hex digits. Userinfo ("@") is not allowed.
_HOST_RE = re.compile(r"(?:\[[0-9A-Za-z:.%_~-]+\]|[0-9A-Za-z._~%!$&'()*+,;=-]*)(?::[0-9]*)?")
# absolute-form = absolute-URI                                             (RFC 9112 §3.2.2)
# http(s)-URI   = scheme "://" authority path-abempty [ "?" query ]        (RFC 9110 §4.2)
_ABSOLUTE_FORM_RE = re.compile(r"[Hh][Tt][Tt][Pp][Ss]?://([^/?]+)([^?]*)(?:\?(.*))?")
# authority-form = uri-host ":" port                                        (RFC 9112 §3.2.3)
_AUTHORITY_FORM_RE = re.compile(r"(?:\[[0-9A-Za-z:.%_~-]+\]|[0-9A-Za-z._~%!$&'()*+,;=-]+):[0-9]+")

# Content-Length = 1*DIGIT                                                  (RFC 9110 §8.6)
_CONTENT_LENGTH_RE = re.compile(rf"[0-9]{{1,{MAX_CONTENT_LENGTH_DIGITS}}}")
#: Shared with the WSGI handler, which checks response field names by the same rule.
TOKEN_RE = re.compile(rf"{_TCHAR}+")

# chunk         = chunk-size [ chunk-ext ] CRLF chunk-data CRLF             (RFC 9112 §7.1)
# chunk-size    = 1*HEXDIG
# chunk-ext     = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )  (§7.1.1)
# chunk-ext-val = token / quoted-string
# quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE                   (RFC 9110 §5.6.4)
# qdtext        = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
# quoted-pair   = "\" ( HTAB / SP / VCHAR / obs-text )
# Deviation: chunk-size is at most MAX_CHUNK_SIZE_DIGITS hex digits.
_QUOTED = r'"(?>(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*)"'
_CHUNK_LINE_RE = re.compile(
    (
        rf"([0-9A-Fa-f]{{1,{MAX_CHUNK_SIZE_DIGITS}}})"
        rf"(?>(?:[ \t]*+;[ \t]*+{_TCHAR}++(?:[ \t]*+=[ \t]*+(?:{_TCHAR}++|{_QUOTED}))?)*)"
    ).encode("latin-1")
)


# ---------------------------------------------------------------------------------------------
# The request head.


def parse_head(
    buf: bytes | bytearray, limits: Limits
) -> tuple[Request, int] | Literal[Incomplete.NEED_DATA]:
    """Parse the request head at the start of ``buf``.

    Returns ``(request, consumed)`` where ``consumed`` counts the bytes of the head including
    leading empty lines and the final blank line, or ``NEED_DATA`` while the head is incomplete
    and still within limits. Raises ``ParseError`` otherwise. ``buf`` is not modified.
    """
    start = _skip_empty_lines(buf) if buf.startswith(b"\r") else 0
    end = buf.find(b"\r\n\r\n", start)
    if end < 0:
        _check_partial_head(buf, start, limits)
        return NEED_DATA
    head = buf[start:end + 2].decode("latin-1")
    line_end = head.find("\r\n")

    if line_end > limits.request_line:
        raise ParseError(414, "request line too long")
    match = _REQUEST_LINE_RE.fullmatch(head, 0, line_end)
    if match is None:
        raise _request_line_error(head[:line_end])
    method, target, version = match.groups()
    if target[0] == "/" and method != "CONNECT":  # origin-form, RFC 9112 §3.2.1
        path, _, query = target.partition("?")
    else:
        path, query = _other_target_form(method, target)

    # Every field line matches once, so a line that fails (bad name, bad byte, obs-fold, bare
    # CR) or a bare LF (one more "\n" than matches) shows up as a count mismatch.
    headers = _FIELD_RE.findall(head, line_end + 2)
    if len(headers) != head.count("\n") - 1:
        _reject_fields(head[line_end + 2:], limits)
    if len(headers) > limits.fields:
        raise ParseError(431, "too many header fields")
    if len(head) - line_end > limits.field_size + 4:  # only then can one line be too long
        _check_field_sizes(head[line_end + 2:], limits)

    # Fields that frame or steer the message; repeated lines combine as a list (RFC 9110 §5.3).
    hosts = 0
    host = length = coding = connection = expect = None
    for name, value in headers:
        lname = name.lower()
        if lname not in _SPECIAL_FIELDS:
            continue
        if lname == "host":
            hosts += 1
            host = value
        elif lname == "content-length":
            length = value if length is None else f"{length}, {value}"
        elif lname == "transfer-encoding":
            coding = value if coding is None else f"{coding}, {value}"
        elif lname == "connection":
            connection = value if connection is None else f"{connection}, {value}"
        else:
            expect = value if expect is None else f"{expect}, {value}"

    http11 = version == "HTTP/1.1"
    if hosts != 1 and (http11 or hosts):  # RFC 9112 §3.2
        raise ParseError(400, "missing Host header" if hosts == 0 else "more than one Host header")
    if host and host not in _VALID_HOSTS and not _valid_host(host):
        raise ParseError(400, "invalid Host header")
    keep_alive = http11 if connection is None else _keep_alive(connection, http11)
    content_length = None
    chunked = False
    if coding is not None:
        _check_transfer_coding(coding, http11, length)
        chunked = True
    elif length is not None:
        content_length = _content_length(length, limits)
    expect_continue = False
    if expect is not None:
        expect_continue = _expects_continue(expect, http11)

    request = _new_request(Request, (method, target, path, query, version, headers,
                                     content_length, chunked, keep_alive, expect_continue))
    return request, end + 4


_new_request = tuple.__new__  # Request(...) without the Python-level __new__ a NamedTuple adds


_SPECIAL_FIELDS = frozenset(("host", "content-length", "transfer-encoding", "connection", "expect"))
#: Host values already found valid: a server sees the same few, so the regex runs once each.
_VALID_HOSTS: set[str] = set()
_VALID_HOSTS_MAX = 1024


def _valid_host(host: str) -> bool:
    if _HOST_RE.fullmatch(host) is None:
        return False
    if len(_VALID_HOSTS) < _VALID_HOSTS_MAX:
        _VALID_HOSTS.add(host)
    return True


def _skip_empty_lines(buf: bytes | bytearray) -> int:
    """Offset of the request line after the empty lines RFC 9112 §2.2 tells us to tolerate."""
    start = 0
    while buf.startswith(b"\r\n", start):
        if start == 2 * MAX_LEADING_EMPTY_LINES:
            raise ParseError(400, "too many empty lines before the request line")
        start += 2
    return start


def _check_partial_head(buf: bytes | bytearray, start: int, limits: Limits) -> None:
    """Raise if an incomplete head is already invalid or can never fit within the limits."""
    line_end = buf.find(b"\r\n", start)
    if line_end < 0:
        if len(buf) - start - buf.endswith(b"\r") > limits.request_line:
            raise ParseError(414, "request line too long")
    else:
        if line_end - start > limits.request_line:
            raise ParseError(414, "request line too long")
        line = buf[start:line_end].decode("latin-1")
        if _REQUEST_LINE_RE.fullmatch(line) is None:
            raise _request_line_error(line)
    crlf = buf.count(b"\r\n", start)
    if buf.count(b"\n", start) != crlf:
        raise ParseError(400, "bare LF in request head")
    if crlf - 1 > limits.fields:  # the request line's CRLF, then one per field line
        raise ParseError(431, "too many header fields")
    if buf.count(b"\r", start) - crlf > buf.endswith(b"\r"):  # a final CR may be half a CRLF
        raise ParseError(400, "bare CR in request head")
    check_open_line(buf, limits)


def check_open_line(buf: bytes | bytearray, limits: Limits) -> None:
    """Raise if the line still arriving at the end of an incomplete head is over its limit,
    or the head over the largest the limits allow.

    For a caller whose last read brought no line end: then no line completed, so nothing else
    parse_head checks can have changed, and rescanning the whole head (up to ~800 KiB with the
    default limits) for every byte of a trickled line would make a slow client cost a busy
    core. This looks back no further than the longest line allowed. (parse_head ends its own
    checks of a partial head with it.)"""
    size = len(buf)
    start = _skip_empty_lines(buf)
    window = max(start, size - max(limits.request_line, limits.field_size) - 2)
    newline = buf.rfind(b"\n", window)
    pending_cr = buf.endswith(b"\r")  # may be half of the line's CRLF
    if newline >= 0:  # the open line is a field line
        if size - newline - 1 - pending_cr > limits.field_size:
            raise ParseError(431, "header field too long")
    elif window == start:  # the open line is the request line, and within the window
        if size - start - pending_cr > limits.request_line:
            raise ParseError(414, "request line too long")
    elif buf.find(b"\n", start) >= 0:  # longer than any line may be
        raise ParseError(431, "header field too long")
    else:
        raise ParseError(414, "request line too long")
    # Complete field lines are only measured once the head is complete; this bounds them.
    if size > max_head_size(limits):
        raise ParseError(431, "request head too large")


def max_head_size(limits: Limits) -> int:
    """Bytes of the largest head the limits allow, empty lines and CRLFs included."""
    return (
        2 * MAX_LEADING_EMPTY_LINES
        + limits.request_line + 2
        + limits.fields * (limits.field_size + 2)
        + 2
    )


def _request_line_error(line: str) -> ParseError:
    """Name what is wrong with a request line that failed the grammar."""
    bad_target = _BAD_TARGET_LINE_RE.fullmatch(line)
    if bad_target is not None:
        fault = "a fragment (#)" if "#" in bad_target[1] else "a byte outside ASCII"
        return ParseError(400, f"invalid request target: {fault} is not allowed")
    if _OTHER_VERSION_RE.fullmatch(line) is not None:
        return ParseError(505, "HTTP version not supported")
    if "\n" in line:
        return ParseError(400, "bare LF in request head")
    if "\r" in line:
        return ParseError(400, "bare CR in request head")
    return ParseError(400, "invalid request line")


def _other_target_form(method: str, target: str) -> tuple[str, str]:
    """(path, query) for the request-target forms other than origin-form (RFC 9112 §3.2)."""
    if method == "CONNECT":  # authority-form, and only that (RFC 9112 §3.2.3)
        if _AUTHORITY_FORM_RE.fullmatch(target) is None:
            raise ParseError(400, "CONNECT needs an authority-form target")
        return "", ""
    if target == "*":  # asterisk-form (RFC 9112 §3.2.4)
        if method != "OPTIONS":
            raise ParseError(400, "asterisk-form target is only for OPTIONS")
        return "*", ""
    match = _ABSOLUTE_FORM_RE.fullmatch(target)  # absolute-form (RFC 9112 §3.2.2)
    if match is None or _HOST_RE.fullmatch(match[1]) is None:
        raise ParseError(400, "invalid request target")
    return match[2] or "/", match[3] or ""


def _reject_fields(block: str, limits: Limits) -> NoReturn:
    """Name the first broken field line; limits are checked first so a flood is a 431."""
    lines = block.split("\r\n")  # the last element is the "" after the final CRLF
    if len(lines) - 1 > limits.fields:
        raise ParseError(431, "too many header fields")
    _check_field_sizes(block, limits)
    for line in lines:
        if _FIELD_RE.fullmatch(line + "\r\n") is None:
            break
    raise ParseError(400, _field_line_fault(line))


def _field_line_fault(line: str) -> str:
    """Reason a field line (CRLF excluded) failed the field-line grammar."""
    if "\n" in line:
        return "bare LF in request head"
    if "\r" in line:
        return "bare CR in request head"
    if line[:1] in (" ", "\t"):
        return "obsolete line folding"  # RFC 9112 §5.2
    name, colon, _ = line.partition(":")
    if not colon:
        return "header field without a colon"
    if not name:
        return "empty header field name"
    if name[-1] in (" ", "\t"):
        return "whitespace before the colon in a header field"  # RFC 9112 §5.1
    if TOKEN_RE.fullmatch(name) is None:
        return "invalid header field name"
    return "invalid character in header field value"


def _check_field_sizes(block: str, limits: Limits) -> None:
    """431 when one field line (CRLF excluded) exceeds ``limits.field_size``."""
    if max(map(len, block.split("\r\n"))) > limits.field_size:
        raise ParseError(431, "header field too long")


def _keep_alive(connection: str, http11: bool) -> bool:
    """Persistence per RFC 9112 §9.3: HTTP/1.1 unless "close"; HTTP/1.0 only with "keep-alive"."""
    single = connection.lower()  # the usual case: one option, no list to split
    if single == "close":
        return False
    if single == "keep-alive":
        return True
    options = {option.strip(" \t") for option in single.split(",")}
    if "close" in options:
        return False
    return http11 or "keep-alive" in options


def _check_transfer_coding(coding: str, http11: bool, length: str | None) -> None:
    """Accept only a chunked body; everything else is a framing error or unsupported."""
    if not http11:
        raise ParseError(400, "Transfer-Encoding in an HTTP/1.0 request")  # RFC 9112 §6.1
    if length is not None:
        raise ParseError(400, "both Transfer-Encoding and Content-Length")  # RFC 9112 §6.3
    codings = [item.strip(" \t").lower() for item in coding.split(",")]
    for item in codings:
        if TOKEN_RE.fullmatch(item) is None:
            raise ParseError(400, "invalid Transfer-Encoding")
    if codings[-1] != "chunked":  # RFC 9112 §6.3: the body length cannot be determined
        raise ParseError(400, "chunked is not the final transfer coding")
    if len(codings) > 1:
        if "chunked" in codings[:-1]:  # RFC 9112 §6.1: chunked at most once
            raise ParseError(400, "chunked applied more than once")
        raise ParseError(501, "unsupported transfer coding")


def _content_length(length: str, limits: Limits) -> int:
    """The body length; a list ("5, 5", or repeated fields) must be one value (RFC 9110 §8.6)."""
    if length.isascii() and length.isdigit() and len(length) <= MAX_CONTENT_LENGTH_DIGITS:
        value = int(length)  # the usual case, without a regex; isdigit() alone admits "²"
    else:
        values = set()
        for item in length.split(","):
            item = item.strip(" \t")
            if _CONTENT_LENGTH_RE.fullmatch(item) is None:
                raise ParseError(400, "invalid Content-Length")
            values.add(int(item))
        if len(values) > 1:
            raise ParseError(400, "conflicting Content-Length values")
        value = values.pop()
    if 0 < limits.body < value:
        raise ParseError(413, "request body too large")
    return value


def _expects_continue(expect: str, http11: bool) -> bool:
    """True for an HTTP/1.1 100-continue; other expectations are a 417 (RFC 9110 §10.1.1)."""
    if {item.strip(" \t").lower() for item in expect.split(",")} != {"100-continue"}:
        raise ParseError(417, "unsupported expectation")
    return http11  # HTTP/1.0: "MUST ignore that expectation"


# ---------------------------------------------------------------------------------------------
# The chunked body.


class ChunkedDecoder:
    """Incremental decoder of a chunked body (RFC 9112 §7.1), fed from the connection buffer.

    States are methods: ``self._step`` is the one that reads the next piece. Each returns True
    when it consumed something and the next state may run, False when it needs more bytes (or
    the body is done).
    """

    __slots__ = ("done", "trailers", "_limits", "_remaining", "_total", "_step")

    def __init__(self, limits: Limits) -> None:
        self.done = False
        self.trailers: list[tuple[str, str]] = []
        self._limits = limits
        self._remaining = 0  # data bytes left in the current chunk
        self._total = 0  # decoded bytes so far, for limits.body
        self._step = self._read_size_line

    def decode(self, buf: bytearray) -> bytes:
        """Consume framing and data from the front of ``buf``; return the data decoded so far.

        Bytes after the final CRLF of the body stay in ``buf`` (the next pipelined request).
        """
        out: list[bytes] = []
        while not self.done and self._step(buf, out):
            pass
        return b"".join(out)

    def _read_size_line(self, buf: bytearray, out: list[bytes]) -> bool:
        end = buf.find(b"\r\n")
        if end < 0:
            _check_open_line(buf, MAX_CHUNK_LINE, 400, "chunk size line too long")
            return False
        if end > MAX_CHUNK_LINE:
            raise ParseError(400, "chunk size line too long")
        match = _CHUNK_LINE_RE.fullmatch(buf, 0, end)
        if match is None:
            raise ParseError(400, _bare_line_end(buf[:end]) or "invalid chunk size line")
        size = int(match[1], 16)
        if 0 < self._limits.body < self._total + size:
            raise ParseError(413, "request body too large")
        del buf[:end + 2]
        if size:
            self._total += size
            self._remaining = size
            self._step = self._read_data
        else:
            self._step = self._read_trailer_line
        return True

    def _read_data(self, buf: bytearray, out: list[bytes]) -> bool:
        if not buf:
            return False
        take = min(self._remaining, len(buf))
        out.append(bytes(buf[:take]))
        del buf[:take]
        self._remaining -= take
        if not self._remaining:
            self._step = self._read_data_end
        return True

    def _read_data_end(self, buf: bytearray, out: list[bytes]) -> bool:
        if not buf.startswith(b"\r\n"):
            if b"\r\n".startswith(buf):  # b"" or b"\r": the CRLF is on its way
                return False
            raise ParseError(400, "chunk data not followed by CRLF")
        del buf[:2]
        self._step = self._read_size_line
        return True

    def _read_trailer_line(self, buf: bytearray, out: list[bytes]) -> bool:
        limits = self._limits
        end = buf.find(b"\r\n")
        if end < 0:
            _check_open_line(buf, limits.field_size, 431, "trailer field too long")
            return False
        if end == 0:  # the blank line that ends the body
            del buf[:2]
            self.done = True
            return False
        if end > limits.field_size:
            raise ParseError(431, "trailer field too long")
        if len(self.trailers) == limits.fields:
            raise ParseError(431, "too many trailer fields")
        line = buf[:end + 2].decode("latin-1")
        match = _FIELD_RE.fullmatch(line)
        if match is None:
            raise ParseError(400, _field_line_fault(line[:-2]))
        self.trailers.append(match.groups())
        del buf[:end + 2]
        return True


def _check_open_line(buf: bytearray, limit: int, status: int, reason: str) -> None:
    """Raise if ``buf``, the start of a line whose CRLF has not arrived, is already invalid."""
    pending_cr = buf.endswith(b"\r")  # may be half of the CRLF
    fault = _bare_line_end(buf[:-1] if pending_cr else buf)
    if fault is not None:
        raise ParseError(400, fault)
    if len(buf) - pending_cr > limit:
        raise ParseError(status, reason)


def _bare_line_end(line: bytes | bytearray) -> str | None:
    """The reason to reject a body line (CRLF excluded) holding a bare LF or CR, else None."""
    if b"\n" in line:
        return "bare LF in chunked body"
    if b"\r" in line:
        return "bare CR in chunked body"
    return None
