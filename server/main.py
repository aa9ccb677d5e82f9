"""The ``prefork`` command: turn argv into a Config, then run the arbiter.

Every operator mistake ends here as one line on stderr and a non-zero exit, never a traceback:
exit 2 for a usage or configuration error, 1 for an app that cannot be loaded (or a socket
that cannot be bound), 3/4 when workers cannot boot.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from prefork.config.appload import AppLoadError
from prefork.config.cli import load_config
from prefork.config.settings import ConfigError

from . import ctl
from .startup import start

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
    cfg = None
    try:
        cfg = load_config(argv)
        return start(cfg, argv=argv, start_cwd=start_cwd, report=print)
    except ConfigError as exc:
        # --check-config is a CI gate: any problem is exit 1, as in gunicorn, wherever it was
        # asked for (command line, $GUNICORN_CMD_ARGS, config file).
        checking = exc.check_config or (cfg is not None and cfg.check_config)
        return fail(str(exc), EXIT_APP if checking else EXIT_USAGE)
    except AppLoadError as exc:  # --check-config only: at a real start, workers import the app
        return fail(str(exc), EXIT_APP)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
