"""The listener set: the arbiter's listening sockets across start-up, reloads and upgrades.

Why a set with a pending change: a reload may add and drop ``--bind`` addresses, but the new
configuration only counts once its workers serve. So :meth:`ListenerSet.stage` binds what is
added at once (the new workers must inherit it) and only *marks* what is dropped; the old
generation keeps every socket it serves. :meth:`commit` then closes the dropped ones,
:meth:`forget` undoes an abandoned reload. An unchanged listener is never touched, so no
connection is refused during a deploy. ``PREFORK_FD`` always lists the current set, for the
next exec (a USR2 upgrade). Binding and adopting single sockets is sockets.py's job.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

from prefork.config.binds import parse_bind
from prefork.config.settings import Config

from .sockets import BindError, Listener, bind, export, open_listeners

log = logging.getLogger("prefork.error")


class ListenerSet:
    """The listeners, and those a pending reload drops once its generation serves."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.closing: list[Listener] = []

    def open(self, cfg: Config, environ: MutableMapping[str, str]) -> None:
        """Adopt what we were handed, bind the rest (raises BindError), export PREFORK_FD."""
        self.listeners = open_listeners(cfg.bind, cfg.backlog, environ)

    def log_listening(self, cfg: Config) -> None:
        for listener in self.listeners:
            _log_listening(listener, cfg)

    def for_workers(self) -> list[socket.socket]:
        """The sockets a new worker accepts on: all but those a pending reload drops."""
        return [listener.sock for listener in self.listeners if listener not in self.closing]

    def stage(self, cfg: Config) -> None:
        """A reload to ``cfg`` begins: bind the addresses it adds (raises BindError), mark the
        ones it drops. Unchanged listeners are not touched."""
        if not cfg.bind:
            return
        wanted = [str(parse_bind(text)) for text in cfg.bind]
        have = {listener.bind or listener.name for listener in self.listeners}
        for address in wanted:
            if address not in have:
                if address.startswith("fd://"):
                    raise BindError(f"--bind {address}: a reload cannot adopt a socket it was not "
                                    "started with; restart (or USR2) to add one")
                listener = bind(parse_bind(address), cfg.backlog)
                listener.sock.set_inheritable(True)
                self.listeners.append(listener)
                _log_listening(listener, cfg)
        self.closing = [l for l in self.listeners if l.bind is not None and l.bind not in wanted]

    def commit(self) -> None:
        """The reload's generation serves: close what it dropped."""
        for listener in self.closing:
            log.info("Closing listener %s (no longer configured)", listener.name)
            listener.close(unlink=True)
            self.listeners.remove(listener)
        self.closing = []
        export(self.listeners, os.environ)

    def forget(self, cfg: Config) -> None:
        """The reload was abandoned: close what it opened, keeping what ``cfg`` (the serving
        configuration) binds. Nothing of the old set is touched."""
        keep = {l.bind or l.name for l in self.listeners} if not cfg.bind else \
            {str(parse_bind(text)) for text in cfg.bind}
        for listener in list(self.listeners):
            if listener.bind is not None and listener.bind not in keep and listener not in self.closing:
                listener.close(unlink=True)
                self.listeners.remove(listener)
        self.closing = []
        export(self.listeners, os.environ)

    def close(self, unlink: bool) -> None:
        """Close our copies; unix socket files go too when ``unlink`` (not when a new arbiter
        now serves them)."""
        for listener in self.listeners:
            listener.close(unlink=unlink)


def _log_listening(listener: Listener, cfg: Config) -> None:
    log.info("Listening at: %s (%d)", listener.url(tls=bool(cfg.certfile)), os.getpid())
