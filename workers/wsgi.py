"""WSGIRequestHandler: one request's life, in PEP 3333's words.

``handle`` builds the environ (workers/environ.py), calls the application with
``start_response``, and writes what it returns, filling in the request's record
(workers/exchange.py). ``start_response`` checks the status and headers when it is called (a
bad header is the app's error, raised in the app, before anything is sent) and renders them;
the response head is sent only when the first body bytes are ready (or the app returns), so
``start_response(..., exc_info)`` can still replace it until then, and head plus first body
chunk leave in one ``send``. Framing is decided once, from what we know:

* the app's ``Content-Length``: honoured; a short body closes the connection, a long one is
  truncated (and logged) — a client must never be handed bytes of the wrong response;
* a one-element list or tuple (the common case): we know the length, so we add the header;
* otherwise, on HTTP/1.1: ``Transfer-Encoding: chunked``; on HTTP/1.0: close-delimited.

Writing never waits for the client: the connection sends what the kernel takes and parks the
rest for the event loop (workers/connection.py), so the whole response is produced at the
app's speed and its iterable is closed at once — except a ``wsgi.file_wrapper`` file still
being sent, whose close() the record carries to the end of the response. A response with
``X-Accel-Buffering: no`` (nginx's convention; not sent on) is streamed instead: the
connection then waits for the client, bounded by the I/O timeout.

HEAD, 1xx, 204 and 304 responses carry no body whatever the app yields. The iterable's
``close()`` is called whatever happens: app error, client gone, timeout.

One handler serves one request at a time (one per worker, or one per thread with ``--threads``),
so its per-request state lives in plain attributes and ``start_response`` is one bound method
made once — no closure per request.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable, Iterable
from typing import Any, Final

from .body import RequestBody
from .connection import ClientDisconnected, ClientTimeout, Connection
from .environ import EnvironBuilder
from .exchange import Exchange
from .filewrapper import FileWrapper
from .http import TOKEN_RE, Limits, ParseError, Request
from .proxy import ForwardedTrust
from .response import SERVER_SOFTWARE, STATUS_LINES, DateLine, error_response, status_line

log = logging.getLogger("prefork.error")

# RFC 9110 §5.5: field-value = *( VCHAR / obs-text / SP / HTAB ). Anything else — CR, LF and NUL
# above all (response splitting), other controls, characters beyond latin-1 — is refused.
_BAD_VALUE_RE: Final = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
_NO_BODY_STATUS: Final = frozenset({204, 304})

# Framing modes, decided when the head is built.
_LENGTH: Final = 0     # Content-Length
_CHUNKED: Final = 1    # Transfer-Encoding: chunked
_UNTIL_CLOSE: Final = 2
_NO_BODY: Final = 3

_new_exchange = object.__new__
_NO_HEADERS: Final = ()  # the response headers until start_response gives some
#: Response header names already checked, with their lower-case form.
_checked_names: dict[str, str] = {}
#: The response headers the handler interprets rather than passes on as they are.
_SPECIAL_NAMES: Final = frozenset({"content-length", "connection", "x-accel-buffering",
                                   "transfer-encoding", "server", "date"})
_CHECKED_NAMES_MAX: Final = 1024

class WSGIRequestHandler:
    """Runs requests through one WSGI application. See the module docstring for the rules."""

    def __init__(self, app: Callable[..., Iterable[bytes]], *, limits: Limits, root_path: str,
                 server_header: bool, proxy: ForwardedTrust) -> None:
        self.app = app
        self.limits = limits
        self.environ_builder = EnvironBuilder(root_path, proxy)
        self.server_line = f"Server: {SERVER_SOFTWARE}\r\n" if server_header else ""
        self.server_header = server_header
        self.date = DateLine()
        self.start_response = self._start_response  # one bound method, reused for every request
        #: False once the worker retires (or with --keep-alive 0): every response then says
        #: ``Connection: close``, so a client learns of the close from a response, not a reset.
        self.keep_alive_allowed = True
        #: A closing connection is closed as soon as its response is written (no post_request
        #: hook, no pool thread in between): its last bytes may wait for the FIN (see
        #: Connection.FIN_FLAGS). The worker decides.
        self.close_follows = False
        # per-request state
        self.conn: Connection | None = None
        self.req: Request | None = None
        self.body: Any = None
        self.environ: dict[str, Any] = {}
        self.status: str | None = None  # set by start_response (PEP 3333's "status_set")
        self.status_code = 0
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.keep_alive = False
        self.framing = _LENGTH
        self.remaining = 0
        self.truncated = False
        self.sent = 0
        self.file_parked = False        # a file_wrapper file is still being sent by the loop
        # what start_response rendered from the app's status and headers
        self._status_line = ""
        self._app_lines = ""            # the app's header lines, checked, CRLF-terminated
        self._app_length: int | None = None
        self._app_close = False         # the app said "Connection: close"
        self._app_framed = False        # the app set Transfer-Encoding itself
        self._own_lines = ""            # our Server and Date, unless the app sent its own
        self._stream = False            # the app asked for X-Accel-Buffering: no

    # -- start_response / write ------------------------------------------------------------------

    def _start_response(self, status: str, headers: list[tuple[str, str]],
                        exc_info: Any = None) -> Callable[[bytes], None]:
        """Check and store the status and headers; nothing is sent yet (PEP 3333). Raises
        ValueError / TypeError for what must never reach the wire, so the app sees its bug."""
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise RuntimeError("start_response called a second time without exc_info")
        cached = STATUS_LINES.get(status)  # the usual statuses: no call
        code, line = cached if cached is not None else status_line(status)
        if type(headers) is not list:
            raise TypeError(f"response headers must be a list, got {type(headers).__name__}")
        lines = []
        length = None
        close = framed = own_server = own_date = stream = False
        for name, value in headers:
            lower = _checked_names.get(name)
            if lower is None:
                if type(name) is not str or not TOKEN_RE.fullmatch(name):  # field-name = token, RFC 9110 §5.1
                    raise ValueError(f"invalid response header name {name!r}")
                lower = name.lower()
                if len(_checked_names) < _CHECKED_NAMES_MAX:
                    _checked_names[name] = lower
            # isascii+isprintable is the quick "VCHAR / SP only"; the regex judges the rest
            if type(value) is not str or (not (value.isascii() and value.isprintable())
                                          and _BAD_VALUE_RE.search(value)):
                raise ValueError(f"invalid value for response header {name!r}: {value!r}")
            if lower in _SPECIAL_NAMES:
                if lower == "content-length":
                    if not (value.isascii() and value.isdigit()) or (length is not None and int(value) != length):
                        raise ValueError(f"invalid Content-Length {value!r} from the application")
                    length = int(value)
                    continue  # written when the framing is decided
                if lower == "connection":
                    close = close or "close" in value.lower()
                    continue  # hop-by-hop: ours to set
                if lower == "x-accel-buffering":  # nginx's convention; a request to us, not the client
                    stream = value.strip().lower() == "no"
                    continue
                if lower == "transfer-encoding":
                    framed = True
                elif lower == "server":
                    own_server = True
                else:
                    own_date = True
            lines.append(f"{name}: {value}\r\n")
        self.status = status
        self.status_code = code
        self.headers = headers
        self._status_line = line
        self._app_lines = "".join(lines)
        self._app_length = length
        self._app_close = close
        self._app_framed = framed
        self._stream = stream
        self._own_lines = ("" if own_server else self.server_line) + ("" if own_date else self.date.get())
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's write() callable: the data leaves before write() returns."""
        if type(data) is not bytes:
            raise TypeError(f"response body must be bytes, got {type(data).__name__}")
        if not self.headers_sent:
            self._send_head(data, None)
        elif data:
            self._send_body(data)

    # -- the request -------------------------------------------------------------------------------

    def handle(self, conn: Connection, req: Request, body: Any, body_length: int | None,
               started: float) -> Exchange:
        """Run one request whose body is ``body`` (a buffered stream, or a RequestBody that
        reads as the client sends). Its response is written through the connection, which
        parks what the client cannot take yet; the returned record says what happened."""
        exchange = _new_exchange(Exchange)  # every field is set below (see exchange.py)
        exchange.req = req
        exchange.started = started
        exchange.finish = None
        self.conn = conn
        self.req = req
        self.status = None
        self.status_code = 0  # stays 0 (and headers empty) if the client leaves before a response
        self.headers = _NO_HEADERS
        self.headers_sent = False
        self.truncated = False
        self.sent = 0
        self.file_parked = False
        self.keep_alive = req.keep_alive and self.keep_alive_allowed
        self.body = body
        environ = exchange.environ = self.environ = self.environ_builder.build(conn, req, body, body_length)
        exchange.keep_alive = False
        try:
            result = self.app(environ, self._start_response)
            try:
                self._write_result(result)
            finally:
                # (a list, the usual result, has no close(): skip the failed lookup, which
                # costs an AttributeError raised and cleared inside getattr)
                close = None if type(result) is list else getattr(result, "close", None)
                if close is not None:
                    if self.file_parked:  # the loop still sends from the file: close it then
                        exchange.finish = close
                    else:
                        close()
        except ClientDisconnected as exc:
            log.debug("client %s went away: %s", environ.get("REMOTE_ADDR"), exc)
        except ClientTimeout as exc:
            log.debug("client %s: %s", environ.get("REMOTE_ADDR"), exc)
            self._fail(408, "request body not received in time")
        except ParseError as exc:  # a bad chunked body, met while the app reads it
            self._fail(exc.status, exc.reason)
        except Exception:
            log.exception("Error handling request %s %s", req.method, req.target)
            self._fail(500, "")
        else:  # may the connection carry another request?
            if self.framing == _LENGTH and self.remaining:
                log.warning("%s %s: application sent %d bytes less than its Content-Length; "
                            "closing the connection", req.method, req.target, self.remaining)
            elif self.keep_alive:
                exchange.keep_alive = body.drain() if type(body) is RequestBody else True
        exchange.status_code = self.status_code
        exchange.headers = self.headers
        exchange.sent = self.sent
        return exchange

    def _write_result(self, result: Iterable[bytes]) -> None:
        if type(result) is list and len(result) == 1 and not self.headers_sent:
            data = result[0]
            if type(data) is not bytes:
                raise TypeError(f"response body must be bytes, got {type(data).__name__}")
            self._send_head(data, len(data))
            return
        if isinstance(result, FileWrapper) and not self.headers_sent and self._send_file(result):
            return
        for data in result:
            if type(data) is not bytes:
                raise TypeError(f"response body must be bytes, got {type(data).__name__}")
            if not self.headers_sent:
                if data:
                    self._send_head(data, None)
            elif data:
                self._send_body(data)
        if not self.headers_sent:
            self._send_head(b"", 0)
        elif self.framing == _CHUNKED:
            self.conn.send(b"0\r\n\r\n")  # type: ignore[union-attr]

    def _fail(self, status: int, reason: str) -> None:
        """Answer an error if nothing has been sent yet; otherwise all we can do is close."""
        self.status_code = status
        if self.headers_sent:
            return
        self.headers_sent = True
        try:
            self.conn.send(error_response(status, reason, self.server_header))  # type: ignore[union-attr]
        except (ClientDisconnected, ClientTimeout):
            pass

    # -- response head and body ------------------------------------------------------------------

    def _send_head(self, data: bytes, total: int | None) -> None:
        """Decide the framing, send head + first data together. ``total`` is the whole body's
        length when the app handed it over at once."""
        if self.status is None:
            raise RuntimeError("application returned a body before calling start_response")
        req = self.req
        code = self.status_code
        length = self._app_length
        close = not self.keep_alive or self._app_close
        if req.method == "HEAD" or code in _NO_BODY_STATUS or code < 200:  # type: ignore[union-attr]
            framing = _NO_BODY
            framing_line = ""
            if code < 200:  # a 1xx is no final response (PEP 3333 has no interim ones): end here
                close = True
            elif code != 204:  # RFC 9110 §8.6: never in 1xx or 204; HEAD says what GET would
                if length is None and total and req.method == "HEAD":  # type: ignore[union-attr]
                    length = total
                if length is not None:
                    framing_line = f"Content-Length: {length}\r\n"
            length = None
        elif length is not None:
            framing = _LENGTH
            framing_line = f"Content-Length: {length}\r\n"
        elif self._app_framed:
            framing = _UNTIL_CLOSE
            framing_line = ""
            close = True
        elif total is not None:
            framing = _LENGTH
            length = total
            framing_line = f"Content-Length: {total}\r\n"
        elif req.version == "HTTP/1.1":  # type: ignore[union-attr]
            framing = _CHUNKED
            framing_line = "Transfer-Encoding: chunked\r\n"
        else:
            framing = _UNTIL_CLOSE
            framing_line = ""
            close = True
        if not close and type(self.body) is RequestBody and not self.body.reusable():
            close = True  # the body is not all here and will not be waited for: say so now
        if close:
            connection_line = "Connection: close\r\n"
            self.keep_alive = False
        elif req.version == "HTTP/1.0":  # type: ignore[union-attr]
            connection_line = "Connection: keep-alive\r\n"
        else:
            connection_line = ""
        head = (f"{self._status_line}{self._own_lines}{self._app_lines}{framing_line}"
                f"{connection_line}\r\n").encode("latin-1")
        self.framing = framing
        self.remaining = length or 0
        self.headers_sent = True
        conn = self.conn
        if self._stream:
            conn.sync = True  # type: ignore[union-attr]
        if not data or framing == _NO_BODY:
            conn.send(head)  # type: ignore[union-attr]
        elif framing == _LENGTH and len(data) <= self.remaining:
            self.remaining -= len(data)
            self.sent = len(data)
            # All of it, before a close, and the client sent nothing more (an unread byte would
            # turn the close into a reset, which discards what is held): FIN with the data.
            fin = close and not self.remaining and self.close_follows and not conn.buf \
                and type(self.body) is not RequestBody  # type: ignore[union-attr]
            conn.send_parts((head, data), conn.FIN_FLAGS if fin else 0)  # type: ignore[union-attr]
        else:
            conn.send(head)  # type: ignore[union-attr]
            self._send_body(data)

    def _send_body(self, data: bytes) -> None:
        framing = self.framing
        conn = self.conn
        if framing == _LENGTH:
            if len(data) > self.remaining:
                if not self.truncated:
                    self.truncated = True
                    log.warning("%s %s: application sent more than its Content-Length; truncated",
                                self.req.method, self.req.target)  # type: ignore[union-attr]
                data = data[:self.remaining]
                if not data:
                    return
            self.remaining -= len(data)
            conn.send(data)  # type: ignore[union-attr]
        elif framing == _CHUNKED:
            conn.send_parts((b"%x\r\n" % len(data), data, b"\r\n"))  # type: ignore[union-attr]
        elif framing == _UNTIL_CLOSE:
            conn.send(data)  # type: ignore[union-attr]
        else:
            return
        self.sent += len(data)

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """Send a regular file with ``sendfile``; False if it is not one (then it is iterated).
        The file's remaining size is the body length unless the app declared its own."""
        filelike = wrapper.filelike
        try:
            fileno = filelike.fileno()
            st = os.fstat(fileno)
            offset = filelike.tell()
        except (AttributeError, OSError, ValueError):
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        self._send_head(b"", max(st.st_size - offset, 0))
        if self.framing == _NO_BODY:
            return True
        count = self.remaining if self.framing == _LENGTH else st.st_size - offset
        self.file_parked = self.conn.send_file(fileno, offset, count)  # type: ignore[union-attr]
        if not self.file_parked:
            filelike.seek(offset + count)
        self.sent += count
        if self.framing == _LENGTH:
            self.remaining -= count
        return True
