"""Where new workers get the application from.

Three cases, decided once per generation:

* an app *object* handed to ``serve()``: every generation inherits that object at fork;
* ``--preload``: the arbiter imports the app and workers inherit it; on HUP it forgets every
  module imported since start-up and imports the app again, so new code is served;
* otherwise ``app`` is None and each worker imports the app itself after the fork.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable

from prefork.config.appload import AppLoadError, load_app
from prefork.config.settings import Config

#: A WSGI application (PEP 3333), as the server modules annotate it.
WSGIApp = Callable[..., Iterable[bytes]]


class AppSource:
    """The app object new workers inherit, or None when they import it themselves."""

    def __init__(self, fixed: WSGIApp | None) -> None:
        self.fixed = fixed
        self.app = fixed
        #: Modules loaded before any app code: a --preload reload keeps exactly these.
        self.base_modules = set(sys.modules)

    def load(self, cfg: Config) -> None:
        """At start-up: preload the app if asked to. Raises AppLoadError."""
        if self.fixed is None and cfg.preload_app:
            self.app = load_app(cfg.app)  # type: ignore[arg-type]

    def reload(self, cfg: Config) -> None:
        """On HUP with --preload: import the app afresh. Raises AppLoadError, and then the
        modules (and the app) of before are kept, so the serving generation is untouched."""
        if self.fixed is not None or not cfg.preload_app:
            return
        previous = {name: module for name, module in sys.modules.items() if name not in self.base_modules}
        for name in previous:
            del sys.modules[name]
        importlib.invalidate_caches()
        try:
            self.app = load_app(cfg.app)  # type: ignore[arg-type]
        except AppLoadError:
            sys.modules.update(previous)  # keep serving the code we had
            raise
