"""A worker process's life after fork: privileges, the app, then the right kind of worker.

Kept apart from the worker classes so that choosing between the one-thread worker and the
``--threads`` worker does not make either module import the other.
"""

from __future__ import annotations

import faulthandler
import importlib
import logging
import socket
from collections.abc import Callable, Iterable

from prefork.config.appload import AppLoadError, load_app
from prefork.config.logsetup import check_logging
from prefork.config.settings import Config, ConfigError

from . import accesslog
from .exitcodes import APP_LOAD_ERROR, WORKER_BOOT_ERROR
from .privileges import drop_privileges
from .reloader import check_engine
from .scoreboard import Slot
from .threaded import ThreadedWorker
from .worker import Worker, error_log_stream

log = logging.getLogger("prefork.error")


def check_worker_settings(cfg: Config) -> None:
    """Open what each worker will open (TLS key and certificates, the access log, the logging
    config it inherits) once in the arbiter, so a typo is a one-line ConfigError at start-up
    or on HUP, not a boot failure."""
    check_logging(cfg)
    check_engine(cfg)
    if cfg.certfile:  # loading ssl only when TLS is on keeps ~5 MiB out of every process
        importlib.import_module(".tls", __package__).make_context(cfg)
    accesslog.validate(cfg)


def run_worker(cfg: Config, app: Callable[..., Iterable[bytes]] | None, sockets: list[socket.socket],
               slot: Slot, ppid: int, number: int = 1) -> int:
    """Drop privileges, load the app (unless the arbiter preloaded it), then serve. Returns
    the exit code; a failing import is APP_LOAD_ERROR, which tells the arbiter not to
    respawn blindly. faulthandler is on from the start: an import that outlasts --timeout is
    aborted too, and its stack is what tells the operator where it was stuck."""
    faulthandler.enable(file=error_log_stream(), all_threads=True)
    try:
        drop_privileges(cfg.user, cfg.group, cfg.umask)
    except (OSError, KeyError) as exc:
        log.error("Cannot switch to user %s / group %s: %s", cfg.user, cfg.group, exc)
        return WORKER_BOOT_ERROR
    if app is None:
        try:
            app = load_app(cfg.app)  # type: ignore[arg-type]
        except AppLoadError as exc:
            log.error("Failed to load the application: %s", exc)
            log.debug("Import traceback", exc_info=exc.__cause__ or exc)
            return APP_LOAD_ERROR
    worker_class = ThreadedWorker if cfg.threads > 1 else Worker
    try:
        worker = worker_class(cfg, app, sockets, slot, ppid, number)
    except ConfigError as exc:  # TLS files or the access log, checked again in this process
        log.error("Cannot start the worker: %s", exc)
        return WORKER_BOOT_ERROR
    try:
        cfg.post_worker_init(worker)
    except Exception:  # a hook's bug is logged with its name; it must not crash-loop workers
        log.exception("Exception in post_worker_init hook")
    return worker.run()
