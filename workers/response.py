"""Pieces of a response head that are the same for many requests, built once and reused.

Status lines are cached per status string (apps use a handful), the ``Date`` line is rebuilt at
most once a second, and error responses for bad requests are complete byte strings. This keeps
string formatting off the per-request path.
"""

from __future__ import annotations

import re
import time
from http import HTTPStatus
from typing import Final

SERVER_SOFTWARE: Final = "prefork"

# RFC 9110 §15: status-code = 3DIGIT; reason-phrase = *( HTAB / SP / VCHAR / obs-text )
_STATUS_RE: Final = re.compile(r"([1-9][0-9]{2}) [\t\x20-\x7e\x80-\xff]*")
_STATUS_CACHE_MAX: Final = 512
#: Status lines already checked and rendered, by the app's status string.
STATUS_LINES: dict[str, tuple[int, str]] = {}


def status_line(status: str) -> tuple[int, str]:
    """``"200 OK"`` -> ``(200, "HTTP/1.1 200 OK\\r\\n")``; ValueError for a malformed status
    (the app's bug, which must never become a response-splitting hole)."""
    cached = STATUS_LINES.get(status)
    if cached is not None:
        return cached
    if type(status) is not str or not _STATUS_RE.fullmatch(status):
        raise ValueError(f"invalid status {status!r} from the application")
    entry = (int(status[:3]), f"HTTP/1.1 {status}\r\n")
    if len(STATUS_LINES) < _STATUS_CACHE_MAX:
        STATUS_LINES[status] = entry
    return entry


_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> str:
    """IMF-fixdate (RFC 9110 §5.6.7), e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``: English names
    whatever the locale (strftime's %a/%b are localized), and no email package to import."""
    t = time.gmtime(seconds)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


class DateLine:
    """The ``Date:`` header line, recomputed only when the second changes."""

    __slots__ = ("_second", "_line")

    def __init__(self) -> None:
        self._second = -1
        self._line = ""

    def get(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._line = f"Date: {http_date(second)}\r\n"
        return self._line


def error_response(status: int, reason: str = "", server_header: bool = True) -> bytes:
    """A complete response for a request we refuse before (or instead of) the app: a short
    plain-text body, ``Connection: close``, nothing that echoes client input unescaped."""
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}\n{reason}\n".encode("ascii", "replace") if reason else f"{status} {phrase}\n".encode()
    server = f"Server: {SERVER_SOFTWARE}\r\n" if server_header else ""
    head = (f"HTTP/1.1 {status} {phrase}\r\n{server}{DateLine().get()}Connection: close\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body
