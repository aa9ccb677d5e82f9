"""The ``prefork`` command: turn argv into a Config, then run the arbiter.

Every operator mistake ends here as one line on stderr and a non-zero exit, never a traceback:
exit 2 for a usage or configuration error, 1 for an app that cannot be loaded (or a socket
that cannot be bound), 3/4 when workers cannot boot.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from prefork.config.appload import AppLoadError, load_app, prepare_sys_path
from prefork.config.cli import format_config, load_config
from prefork.config.logsetup import setup_logging
from prefork.config.settings import ConfigError
from prefork.workers.boot import check_worker_settings

from . import ctl
from .arbiter import Arbiter

EXIT_USAGE = 2
EXIT_APP = 1


def fail(message: str, code: int) -> int:
    print(f"prefork: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("status", "ctl"):  # talk to a running server (ctl.py)
        return ctl.main(argv)
    start_cwd = os.getcwd()  # reloads and upgrades re-read relative paths from here
    try:
        cfg = load_config(argv)
        if cfg.print_config:
            print(format_config(cfg))
            return 0
        if not cfg.app:
            raise ConfigError("no application given (usage: prefork [OPTIONS] MODULE:APP)")
        prepare_sys_path(cfg)
        check_worker_settings(cfg)
        setup_logging(cfg)  # here, so that a bad --log-config is one line, and --check-config checks it
    except ConfigError as exc:
        # --check-config is a CI gate: any problem is exit 1, as in gunicorn.
        return fail(str(exc), EXIT_APP if "--check-config" in argv else EXIT_USAGE)
    if cfg.check_config:
        try:
            load_app(cfg.app)
        except AppLoadError as exc:
            return fail(str(exc), EXIT_APP)
        print(f"prefork: configuration OK, application {cfg.app} loads")
        return 0
    return Arbiter(cfg, argv, start_cwd=start_cwd).run()


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
