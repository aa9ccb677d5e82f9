"""The upgrade (USR2): hand the sockets to a new arbiter exec'd from whatever is on disk now.

The procedure, from both sides:

1. The old arbiter forks and execs the same command line (:class:`Upgrade`). The child inherits
   every listener (``PREFORK_FD``), the old pid (``PREFORK_UPGRADE_FROM``) and the write end of
   a pipe (``PREFORK_UPGRADE_FD``).
2. The new arbiter adopts the sockets and boots its workers while the old ones keep serving.
3. Once its whole first generation serves, the new arbiter takes over the pidfile, the control
   socket, the metrics address and systemd's MAINPID, and writes "ready" on the pipe
   (:func:`take_over`).
4. The old arbiter, reading "ready", falls silent towards systemd and stops gracefully. If the new one dies first (EOF on the
   pipe, then its exit status), the old one logs why, rewrites its pidfile and MAINPID, and has
   never stopped serving.

``outcomes`` counts, for the metrics, upgrades this arbiter handed over (``completed``) and
those whose new arbiter died first (``failed``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from .notify import Notifier, successor_environ
from .pidfile import write_pidfile
from .exits import describe_status
from .workerset import WorkerSet

log = logging.getLogger("prefork.error")

ENV_UPGRADE_FROM: Final = "PREFORK_UPGRADE_FROM"
ENV_UPGRADE_FD: Final = "PREFORK_UPGRADE_FD"
UPGRADE_OUTCOMES: Final = ("completed", "failed")


def is_successor(environ: Mapping[str, str] = os.environ) -> bool:
    """Were we exec'd by a USR2 upgrade whose hand-over has not happened yet?"""
    return ENV_UPGRADE_FROM in environ


class Upgrade:
    """The old arbiter's side. ``on_replaced()`` runs when the new arbiter serves; ``hook``
    runs gunicorn's ``pre_exec`` in the forked child, just before the exec."""

    def __init__(self, readers: dict[int, Callable[[], None]], workers: WorkerSet, notifier: Notifier,
                 on_replaced: Callable[[], None], hook: Callable[..., None]) -> None:
        self.readers = readers
        self.workers = workers
        self.notifier = notifier
        self.on_replaced = on_replaced
        self.hook = hook
        self.pid = 0        # the new arbiter's, from USR2 on (0 again only if it failed)
        self.pipe = -1
        self.pidfile: str | None = None
        self.handed_over = False
        self.outcomes = dict.fromkeys(UPGRADE_OUTCOMES, 0)

    def start(self, argv: Sequence[str] | None, start_cwd: str, pidfile: str | None) -> None:
        """USR2: exec a new arbiter (same argv, whatever code and venv are on disk now) on the
        same sockets."""
        log.info("Handling signal: USR2 (upgrade)")
        if self.pid:
            log.warning("Upgrade already in progress (new arbiter pid %d); USR2 ignored", self.pid)
            return
        if argv is None:
            log.error("Upgrade needs the prefork command line; this arbiter was started from Python")
            return
        command = _exec_command(list(argv))
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        old_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_end)
                self.hook("pre_exec")  # before the environment is copied: what it sets is inherited
                os.set_inheritable(write_end, True)
                env = successor_environ(os.environ, os.getpid())
                env[ENV_UPGRADE_FROM] = str(old_pid)
                env[ENV_UPGRADE_FD] = str(write_end)
                os.chdir(start_cwd)
                os.execve(command[0], command, env)
            finally:
                os._exit(127)
        os.close(write_end)
        self.pid = pid
        self.pipe = read_end
        self.pidfile = pidfile
        self.readers[read_end] = self._on_message
        self.workers.others[pid] = self._on_exit
        log.info("Upgrade: started new arbiter (pid: %d): %s", pid, " ".join(command))

    @property
    def has_successor(self) -> bool:
        """A new arbiter shares our sockets: one is booting, or it took over."""
        return bool(self.pid)

    def _on_message(self) -> None:
        try:
            message = os.read(self.pipe, 64)
        except OSError:
            message = b""
        if message.startswith(b"ready"):
            self._close_pipe()
            self.handed_over = True
            self.outcomes["completed"] += 1
            self.notifier.close()  # MAINPID is the new arbiter: nothing we say is the service's
            self.on_replaced()
        elif not message:
            self._close_pipe()  # it died before it was ready; its exit status tells why

    def _on_exit(self, status: int) -> None:
        """The new arbiter was reaped. After the hand-over that is its business; before, the
        upgrade failed."""
        if self.handed_over:
            return
        log.error("Upgrade failed: the new arbiter %s; this arbiter keeps serving", describe_status(status))
        self.outcomes["failed"] += 1
        self.pid = 0
        self._close_pipe()
        if self.pidfile:
            write_pidfile(self.pidfile, os.getpid())
        self.notifier.mainpid(os.getpid())

    def _close_pipe(self) -> None:
        if self.pipe >= 0:
            self.readers.pop(self.pipe, None)
            os.close(self.pipe)
            self.pipe = -1


def take_over(pidfile: str | None, notifier: Notifier, open_services: Callable[[], None]) -> None:
    """The new arbiter's side, once its workers serve: take over the pidfile, the control and
    metrics sockets (``open_services``) and systemd's MAINPID, then tell the old arbiter to
    retire."""
    old_pid = os.environ.pop(ENV_UPGRADE_FROM)
    fd = int(os.environ.pop(ENV_UPGRADE_FD, "-1"))
    if pidfile:
        write_pidfile(pidfile, os.getpid())
    open_services()
    notifier.mainpid(os.getpid())
    try:
        os.write(fd, b"ready\n")
        os.close(fd)
    except OSError as exc:
        log.warning("Upgrade: could not tell the old arbiter (pid %s) we are ready: %s", old_pid, exc)
    log.info("Upgrade: serving; the old arbiter (pid: %s) retires", old_pid)


def _exec_command(argv: list[str]) -> list[str]:
    """How to start this program again: by the path it was started with (so a venv or
    symlink switched underneath takes effect), or ``python -m prefork.server``."""
    script = sys.argv[0]
    if os.path.basename(script) != "__main__.py" and os.access(script, os.X_OK):
        return [os.path.abspath(script), *argv]
    return [sys.executable, "-m", "prefork.server", *argv]
