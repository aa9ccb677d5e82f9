"""The Python API: run prefork from your own script, with an application object or an
import string.

    from prefork.server import serve

    if __name__ == "__main__":
        raise SystemExit(serve(app, bind="127.0.0.1:8000", workers=4))

``serve`` takes the names a config file takes (gunicorn's: ``workers``, ``bind``, ``timeout``,
``preload_app``, ``accesslog``, the hooks ...) and validates them with the same settings table
as the command line (``prefork.config.cli.make_config``), so a misspelt name or a bad value is
the ConfigError the command line would report, raised before anything is bound or forked.
It then runs the arbiter in the calling process — which must be the main thread, as signal
handlers can only be installed there — until it is stopped, and returns its exit code.

An application *object* needs no import string: the arbiter holds it and every worker
inherits it at fork, as with --preload. So an app built in ``__main__`` or assembled at run
time works. The consequences are --preload's: whatever the object opened before ``serve`` was
called (sockets, threads, database connections) is shared by every worker, so open such things
lazily or in ``post_fork``; and HUP restarts the workers with the same object, so new code needs
a restart. An import string behaves as on the command line (each worker imports it, unless
``preload_app=True``).

What only the command line can do: HUP starts new workers with the settings given here (there
is no command line or config file to read again), and USR2 (re-exec a new arbiter) is refused
with a log line, since there is no command to execute; restart the script instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefork.config.cli import make_config
from prefork.config.settings import ConfigError, lookup

from .appsource import WSGIApp
from .startup import start


def serve(app: WSGIApp | str, *, bind: str | Sequence[str] | None = None,
          workers: int | None = None, **settings: Any) -> int:
    """Serve ``app`` (a WSGI callable, or "module:name" as on the command line) until stopped;
    return the exit code (0 after a TERM/INT/QUIT stop).

    ``bind`` and ``workers`` are the two settings nearly every caller gives; ``settings`` takes
    every other config-file name. Unset settings keep their defaults, environment included
    ($WEB_CONCURRENCY, $PORT, $FORWARDED_ALLOW_IPS), as on the command line.

    Raises ConfigError for an unknown name or a bad value (the command line's checks, from the
    same start-up path: server/startup.py), AppLoadError when ``check_config=True`` and the
    import string cannot be loaded, TypeError for an ``app`` that is neither callable nor a
    string.

    ``print_config=True`` prints the resolved settings and ``check_config=True`` loads the
    application, each then returning 0 without binding anything, as the flags do.
    """
    if bind is not None:
        settings["bind"] = bind
    if workers is not None:
        settings["workers"] = workers
    given = [key for key in settings if lookup(key) == "app"]
    if given:
        raise ConfigError(f"{given[0]}: the application is serve()'s first argument, "
                          f"got {settings[given[0]]!r} as well")
    app_object: WSGIApp | None = None
    if isinstance(app, str):
        settings["app"] = app
    elif callable(app):
        app_object = app
    else:
        raise TypeError(f"serve() needs a WSGI callable or an import string such as "
                        f"'module:app', got {type(app).__name__}")
    return start(make_config(**settings), app=app_object)
