"""The reload (HUP): a new configuration and a new generation, with no gap and no risk.

Three steps, each named for what it does:

* :meth:`Reload.start` re-reads the configuration as a fresh start would, binds the addresses it
  adds, re-imports a preloaded app, and numbers a new generation, which the arbiter then spawns
  beside the serving one. Any error here is logged and nothing changes.
* :meth:`Reload.commit_if_ready` — once every worker of the new generation reports ready —
  retires the old generation, closes dropped listeners, applies new logging settings and
  returns the configuration that now serves.
* :meth:`Reload.abandon` — when a new worker fails to boot, or a newer HUP arrives — retires
  the new generation and closes what it opened; the old generation never noticed.

systemd's Type=notify-reload hears RELOADING=1 at the start and READY=1 at the end either way.
``outcomes`` counts how reloads ended, for the metrics: ``completed``, ``failed`` (nothing
started: a bad configuration, an unbindable address, an app that does not import) or
``abandoned`` (the new generation did not boot, or a newer HUP superseded it). ``history``
keeps how many reloads began and how the latest one ended (:class:`ReloadHistory`), for
``prefork ctl reload``, which waits for it through the control socket's status (view.py,
control.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from prefork.config.appload import AppLoadError, prepare_sys_path
from prefork.config.cli import load_config
from prefork.config.logsetup import logging_settings, setup_logging
from prefork.config.settings import Config, ConfigError
from prefork.workers.boot import check_worker_settings

from .appsource import AppSource
from .listeners import ListenerSet
from .notify import Notifier
from .sockets import BindError
from .exits import WorkerExit
from .workerset import WorkerSet

log = logging.getLogger("prefork.error")

RELOAD_OUTCOMES: Final = ("completed", "failed", "abandoned")


@dataclass
class ReloadHistory:
    """Reloads begun, and how the latest one ended ({"number", "ok", "message"})."""

    started: int = 0
    last: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"started": self.started, "last": self.last}


class Reload:
    """The reload in progress, if any: ``cfg`` is its configuration while its generation boots."""

    def __init__(self, argv: Sequence[str] | None, start_cwd: str, workers: WorkerSet,
                 listeners: ListenerSet, app_source: AppSource, notifier: Notifier,
                 hook: Callable[..., None]) -> None:
        self.argv = list(argv) if argv is not None else None
        self.start_cwd = start_cwd
        self.workers = workers
        self.listeners = listeners
        self.app_source = app_source
        self.notifier = notifier
        self.hook = hook
        self.cfg: Config | None = None
        self.outcomes = dict.fromkeys(RELOAD_OUTCOMES, 0)
        self.history = ReloadHistory()

    def start(self, serving: Config) -> None:
        """HUP: prepare a new generation beside the one serving ``serving``."""
        log.info("Handling signal: HUP (reload)")
        if self.cfg is not None:
            self.abandon("superseded by a newer HUP", serving, level=logging.INFO)  # routine
        self.history.started += 1
        self.notifier.reloading()
        try:
            cfg = self._reread_config(serving)
            self.listeners.stage(cfg)
            self.app_source.reload(cfg)
        except (ConfigError, BindError, AppLoadError) as exc:
            self._ended("failed", f"Reload abandoned: {exc}; generation {self.workers.generation} keeps serving",
                        logging.ERROR)
            self.listeners.forget(serving)
            self.notifier.ready(self.workers.status_line())
            return
        self.hook("on_reload")
        self.workers.new_generation()
        self.cfg = cfg

    def commit_if_ready(self, serving: Config) -> Config | None:
        """If the new generation is ready: make it the serving one and return its configuration."""
        generation, cfg = self.workers.pending, self.cfg
        if generation is None or cfg is None or not self.workers.generation_ready(generation, cfg.workers):
            return None
        self.workers.promote(generation)
        self.listeners.commit()
        if logging_settings(cfg) != logging_settings(serving):
            setup_logging(cfg)  # a new --error-logfile / --log-level takes effect with the reload
        self.cfg = None
        self._ended("completed", f"Reload complete: generation {generation} serving", logging.INFO)
        self.notifier.ready(self.workers.status_line())
        return cfg

    def abandon_if_boot_failed(self, exits: list[WorkerExit], serving: Config) -> None:
        """A worker of the new generation died before it became ready: give the reload up."""
        for exit in exits:
            if exit.failed_boot and exit.of_pending and self.cfg is not None:
                self.abandon(f"a new worker failed to boot ({exit.why})", serving)

    def abandon(self, why: str, serving: Config, level: int = logging.ERROR) -> None:
        self._ended("abandoned", f"Reload abandoned: {why}; generation {self.workers.generation} keeps serving",
                    level)
        self.workers.drop_pending()
        self.cfg = None
        self.listeners.forget(serving)
        self.notifier.ready(self.workers.status_line())

    def _ended(self, outcome: str, message: str, level: int) -> None:
        """Log how this reload ended; count it, and keep it for `prefork ctl reload` to report."""
        ok = outcome == "completed"
        log.log(level, "%s", message)
        self.outcomes[outcome] += 1
        self.history.last = {"number": self.history.started, "ok": ok, "message": message}

    def _reread_config(self, serving: Config) -> Config:
        """The configuration as a fresh start would read it: from the directory we started in
        (relative -c paths, ./pyproject.toml), then --chdir/--pythonpath applied again."""
        if self.argv is None:
            return serving
        os.chdir(self.start_cwd)
        try:
            cfg = load_config(self.argv)
        finally:
            prepare_sys_path(serving)
        prepare_sys_path(cfg)
        check_worker_settings(cfg)
        return cfg
