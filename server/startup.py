"""One start-up path for the ``prefork`` command and for ``serve()``: the same checks, in the
same order, then the arbiter.

Why one: every check the command line makes before binding or forking (an application given,
``--pythonpath``/``--chdir`` applied, the TLS files and the access log opened once) must hold
for the Python API too, or a mistake the command line reports as one line becomes, under
``serve()``, a worker that fails to boot. The callers only differ in how they report: the
command line turns ConfigError and AppLoadError into a line on stderr and an exit code, the API
lets them propagate.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable, Sequence

from prefork.config.appload import load_app, prepare_sys_path
from prefork.config.cli import format_config
from prefork.config.logsetup import setup_logging
from prefork.config.settings import Config, ConfigError
from prefork.workers.boot import check_worker_settings

from .appsource import WSGIApp
from .arbiter import Arbiter

log = logging.getLogger("prefork.error")


def start(cfg: Config, *, argv: Sequence[str] | None = None, app: WSGIApp | None = None,
          start_cwd: str | None = None, report: Callable[[str], None] | None = None) -> int:
    """Check ``cfg``, then serve until stopped; return the exit code.

    ``argv`` is the command line (reloads re-read it, USR2 re-executes it), None from the API;
    ``app`` an application object that replaces ``cfg.app``; ``report`` receives the
    ``--check-config`` verdict. ``print_config`` prints the settings and ``check_config`` loads
    the application, each then returning 0 without binding anything.

    Raises ConfigError for a setting the checks reject (no application, unreadable TLS files,
    an access log that cannot be opened) and AppLoadError when ``check_config`` cannot load
    the application.
    """
    if cfg.print_config:
        print(format_config(cfg))
        return 0
    if app is None and not cfg.app:
        raise ConfigError("no application given (usage: prefork [OPTIONS] MODULE:APP)")
    prepare_sys_path(cfg)
    check_worker_settings(cfg)
    if cfg.check_config:
        if app is None:
            load_app(cfg.app)  # type: ignore[arg-type]
            if report is not None:
                report(f"prefork: configuration OK, application {cfg.app} loads")
        return 0
    if app is not None and not cfg.proc_name:
        cfg.proc_name = app_label(app)  # what ps shows, in place of the import string
    setup_logging(cfg)
    raise_open_file_limit()
    return Arbiter(cfg, argv, app=app, start_cwd=start_cwd).run()


def raise_open_file_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard one, for the arbiter and the workers it forks.

    Every client connection is a file descriptor (two, with a spool file), and distributions
    still start services with a soft limit of 1024 under a hard limit hundreds of times larger;
    a worker's connection cap (--worker-connections) follows what it gets here. nginx's
    worker_rlimit_nofile and systemd's LimitNOFILE= exist for the same reason.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:  # e.g. a hard limit above the kernel's nr_open
            log.warning("Could not raise the open-file limit from %d to %d: %s", soft, hard, exc)


def app_label(app: WSGIApp) -> str:
    """`module:name` of a function or class; of an instance (a Flask app), its class's."""
    target = app if hasattr(app, "__qualname__") else type(app)
    return f"{target.__module__}:{target.__qualname__}"
