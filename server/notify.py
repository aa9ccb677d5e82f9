"""systemd integration without libsystemd: sd_notify(3) messages and socket activation.

The arbiter is single-threaded and its loop must keep turning, so nothing here raises into it
or blocks it: a notification is one datagram on a non-blocking socket, and a failure (no
service manager listening, its queue full) comes back as ``False`` for the caller to log.

Protocol (sd_notify(3), systemd.service(5)):

* ``$NOTIFY_SOCKET`` names an AF_UNIX datagram socket: a filesystem path, or ``@name`` for the
  abstract namespace. Each message is newline-separated ``KEY=VALUE`` fields in one datagram.
* ``Type=notify``: send ``READY=1`` once the workers serve. ``Type=notify-reload`` (systemd >=
  253) also sends SIGHUP on ``systemctl reload`` and waits for ``RELOADING=1`` together with
  ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC in µs, so systemd can tell this reload's answer from a
  stale one), then ``READY=1`` when the reload has finished — also when it was abandoned, with a
  ``STATUS=`` saying so, or ``systemctl reload`` hangs until its timeout.
* ``WATCHDOG_USEC``/``WATCHDOG_PID``: with ``WatchdogSec=``, ``WATCHDOG=1`` must arrive at least
  that often; the usual cadence is half of it.

Handoff (USR2 re-exec). The new arbiter is the old one's child, so for systemd it is just
another process of the unit until it says otherwise:

1. Keep ``NOTIFY_SOCKET`` (and ``WATCHDOG_USEC``) in the environment — never unset them, or the
   new arbiter cannot notify. Exec it with :func:`successor_environ`, which re-points
   ``WATCHDOG_PID`` at it.
2. The new arbiter, once its workers serve, sends ``mainpid(os.getpid())`` then ``ready()``.
   systemd only accepts that from a process other than the main one with ``NotifyAccess=all``
   (set in systemd/prefork.service).
3. Only then may the old arbiter exit: if the main process exits first, systemd takes it for
   the death of the service and kills the whole unit.
4. From the hand-over on, the old arbiter says nothing (:meth:`Notifier.close`): systemd reads
   every process of the unit, so its ``STOPPING=1`` while it drains would stop the service,
   and its ``WATCHDOG=1`` would vouch for a new arbiter that might hang.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping

# systemd reads a notification into a buffer of PIPE_BUF bytes and drops longer messages.
MAX_DATAGRAM = 4096
# sd_listen_fds(3): passed file descriptors start right after stdin, stdout and stderr.
LISTEN_FDS_START = 3
ENV_NOTIFY_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"
LISTEN_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
# Ping the watchdog twice per period, as sd_watchdog_enabled(3) recommends.
WATCHDOG_PING_FRACTION = 0.5
USEC_PER_SEC = 1_000_000


class Notifier:
    """Sends sd_notify messages for this process; a no-op when not run by systemd.

    Every method returns True when the datagram was handed to the kernel, False when
    notification is disabled or the send failed (``last_error`` says why). None raises.
    """

    def __init__(self, address: bytes | None, watchdog_usec: int | None, watchdog_pid: int | None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self.last_error: OSError | None = None
        self._sock: socket.socket | None = None
        if address is not None:
            try:
                # Non-inheritable (Python's default): a re-exec'd arbiter opens its own.
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            except OSError as exc:
                self.last_error = exc

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID; leaves them in place for a successor."""
        return cls(
            _socket_address(environ.get(ENV_NOTIFY_SOCKET, "")),
            _positive_int(environ.get(ENV_WATCHDOG_USEC)),
            _positive_int(environ.get(ENV_WATCHDOG_PID)),
        )

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def ready(self, status: str | None = None) -> bool:
        """Start-up or reload finished: the workers serve."""
        return self._send("READY=1", status)

    def reloading(self) -> bool:
        """A reload starts; Type=notify-reload requires the monotonic time in the same message."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """A graceful stop starts, so `systemctl status` shows "deactivating" rather than a hang."""
        return self._send("STOPPING=1")

    def status(self, text: str) -> bool:
        """One line for `systemctl status`."""
        return self._send(None, text)

    def mainpid(self, pid: int) -> bool:
        """Names the unit's main process: the new arbiter after a USR2 handoff."""
        return self._send(f"MAINPID={pid}")

    def watchdog(self) -> bool:
        """Keep-alive ping for WatchdogSec=."""
        return self._send("WATCHDOG=1")

    def close(self) -> None:
        """Never notify again: a USR2 successor now speaks for the service (step 4 above)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings, or None when systemd expects none from this process.

        WATCHDOG_PID, when set, names the process the watchdog is meant for; environment
        variables reach children too, and a worker must not ping for the arbiter.
        """
        if self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec * WATCHDOG_PING_FRACTION / USEC_PER_SEC

    def _send(self, fields: str | None, status: str | None = None) -> bool:
        if self._sock is None or self._address is None:
            return False
        lines = [] if fields is None else [fields]
        if status is not None:
            lines.append("STATUS=" + _one_line(status))
        # Fields first, STATUS= last: an over-long message loses the end of its status text, cut
        # on a character boundary (systemd ignores a STATUS= that is not valid UTF-8).
        message = "\n".join(lines).encode("utf-8", "replace")[:MAX_DATAGRAM]
        message = message.decode("utf-8", "ignore").encode("utf-8")
        try:
            # sendto() rather than connect(): the path is resolved per message, so a service
            # manager that re-created its socket (daemon-reexec) is still reached.
            self._sock.sendto(message, self._address)
        except OSError as exc:  # ENOENT, ECONNREFUSED (nobody listening), EAGAIN (queue full)
            self.last_error = exc
            return False
        return True


def successor_environ(environ: Mapping[str, str], pid: int) -> dict[str, str]:
    """The environment for the arbiter that replaces this one (USR2), exec'd as process ``pid``.

    NOTIFY_SOCKET and WATCHDOG_USEC stay; WATCHDOG_PID is re-pointed at the successor, or it
    would find the watchdog meant for its parent and stop pinging, and systemd would kill it.
    Call it in the forked child, with ``os.getpid()``, right before exec.
    """
    env = dict(environ)
    if ENV_WATCHDOG_PID in env:
        env[ENV_WATCHDOG_PID] = str(pid)
    return env


def listen_fds(environ: MutableMapping[str, str] = os.environ,
               pid: int | None = None) -> list[tuple[int, str | None]]:
    """Sockets passed by systemd socket activation (sd_listen_fds_with_names(3)), as (fd, name).

    They are ours only if LISTEN_PID names this process; names come from LISTEN_FDNAMES
    (FileDescriptorName= in the socket unit), None where systemd sent none or the count does not
    match. The three variables are removed from ``environ`` in every case, matching or not, so
    no child can adopt the fds again — not even one that happens to reuse a stale LISTEN_PID.
    """
    pid = os.getpid() if pid is None else pid
    listen_pid, count, names = (environ.pop(name, None) for name in LISTEN_ENV)
    if _positive_int(listen_pid) != pid:
        return []
    n = _positive_int(count)
    if n is None:
        return []
    labels: list[str | None] = [None] * n
    if names is not None and len(names.split(":")) == n:
        labels = [name or None for name in names.split(":")]
    return [(LISTEN_FDS_START + i, labels[i]) for i in range(n)]


def _socket_address(value: str) -> bytes | None:
    """NOTIFY_SOCKET as a sendto() address: a path, or @name -> NUL + name (abstract namespace).

    Anything else (unset, relative, systemd's vsock: form for VMs) disables notification.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    return None


def _positive_int(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if number > 0 else None


def _one_line(text: str) -> str:
    """A newline in STATUS= would start a new field, a NUL would get the message dropped."""
    return " ".join(text.replace("\0", " ").splitlines())
