"""What the control socket and the metrics endpoint may know about the running server.

Why a view rather than the arbiter: they answer questions from outside (``prefork status``, a
Prometheus scrape), so they get read-only answers — the workers with their scoreboard slots, the
generations, the configuration in force, how reloads and upgrades ended, the listeners'
accept queues — and, for the control socket, one way to act: enqueue
a signal, exactly as an operator's ``kill`` would. They cannot reach past it into the arbiter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from prefork.config.settings import Config
from prefork.workers.scoreboard import SlotView

from .listeners import ListenerSet
from .reload import ReloadHistory
from .sockets import listen_queue
from .workerset import WorkerProcess, WorkerSet, display_name


class ServerView:
    """Read-only answers about one arbiter: its identity, configuration and workers."""

    def __init__(self, pid: int, workers: WorkerSet, config: Callable[[], Config],
                 listeners: ListenerSet | None = None, reloads: Mapping[str, int] | None = None,
                 upgrades: Mapping[str, int] | None = None,
                 reload_history: ReloadHistory | None = None) -> None:
        self.pid = pid
        self.started = time.time()  # wall clock: uptime in `prefork status`, process_start_time_seconds
        self._workers = workers
        self._config = config
        self._listeners = listeners
        self.reloads: Mapping[str, int] = reloads or {}    # outcome -> count (reload.py)
        self.upgrades: Mapping[str, int] = upgrades or {}  # outcome -> count (upgrade.py)
        self._reload_history = reload_history if reload_history is not None else ReloadHistory()

    @property
    def config(self) -> Config:
        """The configuration in force (a reload replaces it when its generation serves)."""
        return self._config()

    @property
    def name(self) -> str:
        return display_name(self.config)

    @property
    def generation(self) -> int:
        return self._workers.generation

    @property
    def reloading(self) -> int | None:
        """The generation a reload is booting, if any."""
        return self._workers.pending

    @property
    def reload_status(self) -> dict[str, Any]:
        """Reloads begun and how the latest ended, for `prefork ctl reload` (a copy)."""
        return self._reload_history.as_dict()

    @property
    def stopping(self) -> bool:
        """A stop was announced (TERM: --shutdown-delay runs, workers still serve) or runs."""
        return self._workers.stopping or self._workers.scoreboard.stopping

    def workers(self) -> list[tuple[WorkerProcess, SlotView]]:
        """Each live worker with a snapshot of its scoreboard slot."""
        return self._workers.views()

    def listen_queues(self) -> list[tuple[str, int]]:
        """(listener name, connections waiting to be accepted) for each TCP listener."""
        listeners = self._listeners.listeners if self._listeners is not None else []
        queues = [(listener.name, listen_queue(listener.sock)) for listener in listeners]
        return [(name, depth) for name, depth in queues if depth is not None]

    def status_line(self) -> str:
        return self._workers.status_line()
