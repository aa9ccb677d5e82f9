"""The access log: one line per request, in gunicorn's format language, written in batches.

``--access-logformat`` is a ``%``-format over gunicorn's atoms, so existing formats and the
parsers reading them keep working (the default is Apache's combined log format):

    h  remote address              l  "-" (identd)              u  user (HTTP Basic auth) or "-"
    t  time, [21/Nov/2026:10:00:00 +0000]                       r  request line as received
    m  method      U  path (PATH_INFO)     q  query string      H  protocol
    s  status      B  body bytes sent      b  the same (gunicorn's: 0 for none, not CLF's "-")
    f  Referer     a  User-Agent           p  "<pid>"
    T  duration in whole seconds   M  in milliseconds   D  in microseconds   L  "1.000250" seconds
    {name}i  request header    {name}o  response header    {key}e  WSGI environ key

Names in braces match case-insensitively; what is missing prints as "-". As in Apache, ``"``
and ``\\`` are escaped with a backslash and control characters as ``\\xHH``, so a field cannot
break out of its quotes or the line.

``--access-log-json`` writes the same fields (those the format names) as one JSON object per
line, keyed by name instead of letter (``remote_addr``, ``request``, ``status`` ...; headers
under ``request_headers`` / ``response_headers``, environ keys under ``environ``), with numbers
as numbers, a missing value as null and the time in ISO 8601.

Through ``logging`` as well: when the logging config (``logconfig_dict``, ``--log-config-json``,
``--log-config``, ``--log-syslog``) gives the ``prefork.access`` logger (or gunicorn's
``gunicorn.access``) handlers of its own, every line also goes to it, as gunicorn logs it: the
format as the message and the atoms as a dict in ``record.args`` (JSON mode: the JSON text as
the message), so a JSON formatter or a syslog handler sees each request. That costs a logging
call per request; the batched writer below stays the default, and ``--access-logfile`` may be
off while the logger is on.

Cost: nothing when the log is off (the worker checks one attribute). When on, lines collect in
memory and leave in one ``write`` when the batch reaches FLUSH_BYTES, at the worker's 1 s tick,
and when the worker retires or exits — so a busy worker makes a few writes a second, not one
per request. The file is opened with O_APPEND, so workers never overwrite each other; on a
pipe (stdout under a supervisor) a write holds whole lines and at most PIPE_BUF bytes, which
the kernel keeps atomic, so lines from different workers never interleave. USR1 reopens the
file by name after the lines already logged went to the old one (logrotate without
copytruncate). A worker killed with SIGKILL loses at most its last second of lines.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import select
import stat
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, Final

from prefork.config.logsetup import access_logger
from prefork.config.settings import Config, ConfigError

log = logging.getLogger("prefork.error")

STDOUT: Final = "-"
#: Buffered bytes (roughly) that trigger a write before the next tick.
FLUSH_BYTES: Final = 65536
_FILE_MODE: Final = 0o644

# %(name)s, %(name)-10s, %(name)d ...: the keys a format uses
_KEY_RE: Final = re.compile(r"%\(([^)]*)\)")
_BRACED_RE: Final = re.compile(r"\{([^}]*)\}([ioe])")
# Apache's escaping: backslash and double quote get a backslash, controls become \xHH.
_ESCAPES: Final = {**{c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}, ord('"'): '\\"', ord("\\"): "\\\\"}
_needs_escape: Final = re.compile(r'[\x00-\x1f\x7f"\\]').search  # most values need nothing

#: What a line is made of: WSGIRequestHandler's per-request state, read through exactly these
#: attributes (a per-request record with the same names works as well): ``environ``,
#: ``status_code`` (0: no response), ``sent`` (body bytes), ``headers`` (the response's, a list
#: of (name, value)), ``req.headers`` (the request's, the same form).
Handler = Any
Atom = Callable[[dict[str, Any], Handler, float], Any]


def _user(environ: dict[str, Any]) -> str | None:
    """The user name of HTTP Basic credentials (gunicorn's ``u``); the password is ignored."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, _ = decoded.partition(":")
    return user if sep else None


def _request_line(environ: dict[str, Any]) -> str:
    return f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"


def _header(headers: list[tuple[str, str]], lower: str) -> str | None:
    values = [value for name, value in headers if name.lower() == lower]
    return ", ".join(values) if values else None


def _missing(environ: dict[str, Any], handler: Handler, duration: float) -> None:
    return None


def _environ_value(environ: dict[str, Any], key: str) -> Any:
    if key in environ:
        return environ[key]
    lower = key.lower()
    return next((value for name, value in environ.items() if name.lower() == lower), None)


class _Clock:
    """Wall-clock renderings of the request time, recomputed once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.clf = ""
        self.iso = ""

    def update(self) -> None:
        second = int(time.time())
        if second != self.second:
            self.second = second
            local = time.localtime(second)
            self.clf = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", local)
            self.iso = time.strftime("%Y-%m-%dT%H:%M:%S%z", local)
            self.iso = f"{self.iso[:-2]}:{self.iso[-2:]}"  # RFC 3339 wants +00:00


_clock = _Clock()

# letter -> (JSON name, value); the value is what JSON gets, text mode renders it.
_ATOMS: Final[dict[str, tuple[str, Atom]]] = {
    "h": ("remote_addr", lambda e, h, d: e.get("REMOTE_ADDR") or None),
    "l": ("ident", _missing),
    "u": ("user", lambda e, h, d: _user(e)),
    "t": ("time", lambda e, h, d: _clock.iso),
    "r": ("request", lambda e, h, d: _request_line(e)),
    "m": ("method", lambda e, h, d: e["REQUEST_METHOD"]),
    "U": ("path", lambda e, h, d: e["PATH_INFO"]),
    "q": ("query", lambda e, h, d: e["QUERY_STRING"]),
    "H": ("protocol", lambda e, h, d: e["SERVER_PROTOCOL"]),
    "s": ("status", lambda e, h, d: h.status_code or None),  # 0: no response was made
    "B": ("bytes", lambda e, h, d: h.sent),
    "b": ("bytes", lambda e, h, d: h.sent),
    "f": ("referer", lambda e, h, d: e.get("HTTP_REFERER")),
    "a": ("user_agent", lambda e, h, d: e.get("HTTP_USER_AGENT")),
    "T": ("request_time_s", lambda e, h, d: int(d)),
    "M": ("request_time_ms", lambda e, h, d: int(d * 1e3)),
    "D": ("request_time_us", lambda e, h, d: int(d * 1e6)),
    "L": ("request_time", lambda e, h, d: round(d, 6)),
    "p": ("pid", lambda e, h, d: os.getpid()),
}
# Where text differs from JSON: the CLF time, L with six decimals, "<pid>".
_TEXT: Final[dict[str, Atom]] = {
    "t": lambda e, h, d: _clock.clf,
    "L": lambda e, h, d: f"{d:.6f}",
    "p": lambda e, h, d: f"<{os.getpid()}>",
}
_BRACED: Final[dict[str, tuple[str, Callable[[str], Atom]]]] = {
    "i": ("request_headers", lambda n: lambda e, h, d: _header(h.req.headers, n)),
    "o": ("response_headers", lambda n: lambda e, h, d: _header(h.headers, n)),
    "e": ("environ", lambda n: lambda e, h, d: _environ_value(e, n)),
}


class AccessLog:
    """One worker's access log. ``log()`` per request; ``flush()`` at least once a second.
    Lines go to ``path`` (batched; None: no file) and to ``logger`` (when not None)."""

    def __init__(self, path: str | None, fmt: str, json_lines: bool,
                 logger: logging.Logger | None = None) -> None:
        self.path = path
        self.format = fmt
        self.json = json_lines
        self.logger = logger
        self.atoms = self._compile(fmt, json_lines)
        self.fd = -1 if path is None else 1 if path == STDOUT else _open(path)
        self.chunk = self._chunk_size()
        self.lines: list[str] = []
        self.size = 0
        self.lock = threading.Lock()
        self.failed = False  # a write or format error is reported once, not per request

    @classmethod
    def from_config(cls, cfg: Config) -> AccessLog | None:
        """The access log cfg asks for, or None when it is off: no --access-logfile and no
        handlers on the access logger. Raises ConfigError."""
        logger = access_logger()
        if cfg.accesslog is None and logger is None:
            return None
        access_log = cls(cfg.accesslog, cfg.access_log_format, cfg.access_log_json, logger)
        access_log.check_format()
        return access_log

    @staticmethod
    def _compile(fmt: str, json_lines: bool) -> list[tuple[str, str | None, str, Atom]]:
        """For every key the format names: (format key, JSON group or None, JSON name, value)."""
        atoms = []
        for key in dict.fromkeys(_KEY_RE.findall(fmt)):
            braced = _BRACED_RE.fullmatch(key)
            if braced:
                name, kind = braced[1], braced[2]
                group, make = _BRACED[kind]
                atoms.append((key, group, name, make(name if kind == "e" else name.lower())))
            elif key in _ATOMS:
                name, atom = _ATOMS[key]
                if not json_lines:
                    atom = _TEXT.get(key, atom)
                atoms.append((key, None, name, atom))
            else:  # gunicorn prints "-" for a key it does not know
                atoms.append((key, None, key, _missing))
        return atoms

    def check_format(self) -> None:
        """Format one made-up request, so a bad format is a start-up error, not one per request."""
        handler = SimpleNamespace(req=SimpleNamespace(headers=[("User-Agent", "check")]),
                                  status_code=200, sent=0, headers=[("Content-Type", "text/plain")])
        environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/", "PATH_INFO": "/", "QUERY_STRING": "",
                   "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}
        try:
            self.format_line(environ, handler, 0.001)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"--access-logformat: {exc}: {self.format!r}") from None

    def _chunk_size(self) -> int:
        """How much one write may carry: anything on a regular file (O_APPEND keeps writes
        whole), PIPE_BUF on a pipe or terminal, where larger writes may interleave."""
        if self.fd < 0:
            return 0
        try:
            regular = stat.S_ISREG(os.fstat(self.fd).st_mode)
        except OSError:
            regular = False
        return 1 << 30 if regular else select.PIPE_BUF

    # -- per request -----------------------------------------------------------------------------

    def format_line(self, environ: dict[str, Any], handler: Handler, duration: float) -> str:
        """The line, newline included."""
        if self.json:
            return self._json_text(environ, handler, duration) + "\n"
        return self.format % self._text_values(environ, handler, duration) + "\n"

    def _json_text(self, environ: dict[str, Any], handler: Handler, duration: float) -> str:
        _clock.update()
        record: dict[str, Any] = {}
        for _, group, name, atom in self.atoms:
            value = atom(environ, handler, duration)
            if group is None:
                record[name] = value
            else:
                record.setdefault(group, {})[name] = value
        return json.dumps(record, separators=(",", ":"), default=str)

    def _text_values(self, environ: dict[str, Any], handler: Handler,
                     duration: float) -> dict[str, Any]:
        """The format's keys -> their rendered values (what ``self.format % values`` needs)."""
        _clock.update()
        values = {}
        for key, _, _, atom in self.atoms:  # rendered inline: this loop runs per request
            value = atom(environ, handler, duration)
            if type(value) is str:
                if _needs_escape(value):
                    value = value.translate(_ESCAPES)
            elif value is None:
                value = "-"
            values[key] = value
        return values

    def log(self, handler: Handler, duration: float) -> None:
        """Log the request the handler just answered; ``duration`` in seconds."""
        try:
            if self.logger is not None:
                self._log_record(handler, duration)
            if self.fd < 0:
                return
            line = self.format_line(handler.environ, handler, duration)
        except (TypeError, ValueError, KeyError) as exc:  # e.g. %(s)d over an odd environ value
            if not self.failed:
                self.failed = True
                log.error("access log: cannot format a line (%s); such lines are skipped", exc)
            return
        with self.lock:
            self.lines.append(line)
            self.size += len(line)
            if self.size < FLUSH_BYTES:
                return
        self.flush()

    def _log_record(self, handler: Handler, duration: float) -> None:
        """The line as gunicorn logs it: format and atoms, rendered by the handler's formatter
        (a format error surfaces here, not inside logging, which would only print it)."""
        if self.json:
            self.logger.info("%s", self._json_text(handler.environ, handler, duration))
            return
        values = self._text_values(handler.environ, handler, duration)
        self.format % values  # noqa: B018 - raises what logging would swallow
        self.logger.info(self.format, values)

    # -- output ----------------------------------------------------------------------------------

    def flush(self) -> None:
        with self.lock:
            if not self.lines:
                return
            lines, self.lines, self.size = self.lines, [], 0
            chunk = self.chunk
            batch: list[str] = []
            batch_size = 0
            for line in lines:
                if batch and batch_size + len(line) > chunk:
                    self._write("".join(batch))
                    batch, batch_size = [], 0
                batch.append(line)
                batch_size += len(line)
            self._write("".join(batch))

    def _write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8", "backslashreplace"))
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as exc:
            if not self.failed:
                self.failed = True
                log.error("access log: cannot write to %s: %s; lines are being lost",
                          "stdout" if self.path == STDOUT else repr(self.path), exc.strerror)

    def reopen(self) -> None:
        """USR1: what was logged goes to the file by its old name (renamed or not), what
        follows to a file opened by name now."""
        self.flush()
        if self.path is None or self.path == STDOUT:
            return
        try:
            fd = _open(self.path)
        except ConfigError as exc:
            log.error("access log: %s; still writing to the old file", exc)
            return
        with self.lock:
            old, self.fd = self.fd, fd
            self.failed = False
        os.close(old)

    def close(self) -> None:
        self.flush()
        if self.fd > 2:
            os.close(self.fd)
        self.fd = -1


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
    except OSError as exc:
        raise ConfigError(f"--access-logfile: cannot open {path!r}: {exc.strerror}") from None


def validate(cfg: Config) -> None:
    """For the arbiter before it forks: the format works and the file can be opened."""
    access_log = AccessLog.from_config(cfg)
    if access_log is not None:
        access_log.close()
