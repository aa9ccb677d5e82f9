"""StatsD: gunicorn's metric lines on a datagram socket that never blocks and never raises.

gunicorn (``gunicorn/instrument/statsd.py``) sends, under ``--statsd-prefix``:

    gunicorn.requests            counter  one per request
    gunicorn.request.duration    timer    milliseconds
    gunicorn.request.status.NNN  counter  one per request with that status
    gunicorn.workers             gauge    the number of workers, when it changes
    gunicorn.log.LEVEL           counter  critical, error, warning, exception log records

A line is ``<prefix><name>:<value>|<type>`` (types ``c|@1.0``, ``ms``, ``g``), followed by
``|#<tags>`` when ``--dogstatsd-tags`` is set (Datadog's datagram format). Unlike gunicorn,
several lines share one datagram, separated by newlines (the statsd and dogstatsd servers
both read that), so a worker pays one ``send`` per loop turn, not three per request.

This module is the wire side, shared by every process: the arbiter and the workers count log
records through ``LogLevelCounter`` (installed by logsetup); the per-request batching the
worker does lives in ``prefork.workers.statsd``. It sits in config/ because logsetup, which
must install the counter in every process, may not import the workers package.
"""

from __future__ import annotations

import logging
import socket
from typing import Final

from .settings import STATSD_PORT, Config, with_default_port

log = logging.getLogger("prefork.error")

#: The largest datagram we send: what fits one Ethernet frame after IP and UDP headers with
#: room to spare (etsy/statsd's advice for its multi-metric packets).
MAX_DATAGRAM: Final = 1432
COUNTER: Final = "c|@1.0"  # gunicorn always writes the sample rate
TIMER: Final = "ms"
GAUGE: Final = "g"


def normalize_prefix(prefix: str) -> str:
    """gunicorn's rule: a prefix ends with exactly one `.`; no prefix stays empty."""
    stem = prefix.rstrip(".")
    return f"{stem}." if stem else ""


class StatsdSocket:
    """A connected, non-blocking datagram socket to the statsd server. ``send`` never raises:
    a metric is not worth a failed request. Failures are counted in ``errors``."""

    def __init__(self, address: str, prefix: str = "", tags: str = "") -> None:
        self.address = address
        self.prefix = normalize_prefix(prefix)
        self.suffix = f"|#{tags}" if tags else ""
        self.errors = 0
        self.sock: socket.socket | None = None
        try:
            self.sock = _connect(address)
        except OSError as exc:
            log.warning("statsd: cannot reach %s (%s); metrics are dropped", address,
                        exc.strerror or exc)

    @classmethod
    def from_config(cls, cfg: Config) -> StatsdSocket | None:
        """The socket --statsd-host asks for, or None when it is unset."""
        if cfg.statsd_host is None:
            return None
        return cls(cfg.statsd_host, cfg.statsd_prefix, cfg.dogstatsd_tags)

    def line(self, name: str, value: float, kind: str) -> str:
        """One metric, e.g. ``shop.gunicorn.requests:3|c|@1.0|#env:prod``."""
        return f"{self.prefix}{name}:{value}|{kind}{self.suffix}"

    def send(self, lines: list[str]) -> None:
        """Send the lines, as few datagrams of at most MAX_DATAGRAM bytes as they fit in."""
        datagram = b""
        for text in lines:
            data = text.encode("ascii", "replace")
            if datagram and len(datagram) + 1 + len(data) > MAX_DATAGRAM:
                self._send(datagram)
                datagram = b""
            datagram = datagram + b"\n" + data if datagram else data
        if datagram:
            self._send(datagram)

    def _send(self, datagram: bytes) -> None:
        if self.sock is None:
            self.errors += 1
            return
        try:
            self.sock.send(datagram)
        except OSError:  # full buffer, nobody listening (ECONNREFUSED), ...: drop, count
            self.errors += 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class LogLevelCounter(logging.Handler):
    """Counts error-log records as gunicorn's ``gunicorn.log.<level>`` counters; a record
    logged with a traceback (``log.exception``) counts as ``exception`` instead of ``error``.
    One datagram per record: these are rare, and a crash must not lose its count."""

    def __init__(self, statsd: StatsdSocket) -> None:
        super().__init__(logging.WARNING)
        self.statsd = statsd

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.CRITICAL:
            level = "critical"
        elif record.levelno >= logging.ERROR:
            level = "exception" if record.exc_info else "error"
        else:
            level = "warning"
        self.statsd.send([self.statsd.line(f"gunicorn.log.{level}", 1, COUNTER)])

    def close(self) -> None:
        self.statsd.close()
        super().close()


def _connect(address: str) -> socket.socket:
    """A datagram socket connected to `address` (the forms of settings.statsd_address)."""
    if address.startswith("unix:"):
        family, target = socket.AF_UNIX, address.removeprefix("unix:").removeprefix("//")
    else:
        host, _, port = with_default_port(address, STATSD_PORT).rpartition(":")
        family, _, _, _, target = socket.getaddrinfo(host.strip("[]"), int(port),
                                                     type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.connect(target)
    except OSError:
        sock.close()
        raise
    return sock
