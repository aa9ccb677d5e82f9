"""``--reload`` (development): notice that the application's source, or an extra file, changed.

The Werkzeug reloader's idea inside the pre-fork model: worker 1 knows every file its imported
modules came from, plus ``--reload-extra-file`` (templates, config files), and its loop asks
``changed()`` once a second. When a file changed it asks the arbiter for a HUP — the same
gap-free reload production uses — so a syntax error in the edited file leaves the old workers
serving and the error in the log.

Two engines, one interface (``changed()`` returns the path of a changed file, or None):

* ``SourceWatcher`` polls: it remembers every file's mtime and stats them all on each call.
  Stdlib only; a few thousand stats a second for a large application.
* ``InotifyWatcher`` uses the optional ``watchfiles`` package (``pip install prefork[reload]``):
  a thread blocks on inotify for the files' directories (directories, because editors save
  by writing a new file and renaming it over the old one), so ``changed()`` reads a list.

``--reload-engine``: ``auto`` (inotify when watchfiles is installed, else poll), ``poll``,
``inotify`` (watchfiles required; check_engine says so before any worker starts).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any, Final

from prefork.config.settings import Config, ConfigError

#: watchfiles waits this long (ms) for more events before reporting a batch: editors write a
#: file in several steps, and one reload is wanted, not three.
DEBOUNCE_MS: Final = 100


def module_files() -> list[str]:
    """The source files of every module imported so far (the stdlib included: cheap enough
    for development, and it catches edits anywhere on sys.path)."""
    files = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith((".py", ".pyc")) and os.path.isfile(path):
            files.append(path[:-1] if path.endswith(".pyc") and os.path.isfile(path[:-1]) else path)
    return files


def watched_files(extra_files: Iterable[str]) -> list[str]:
    """Absolute paths of the module files and the extra files, each once."""
    return list(dict.fromkeys(os.path.abspath(path) for path in (*module_files(), *extra_files)))


class SourceWatcher:
    """Polling: remembers mtimes; ``changed()`` names the first file whose mtime moved."""

    def __init__(self, extra_files: Iterable[str] = ()) -> None:
        self.mtimes = {path: _mtime(path) for path in watched_files(extra_files)}

    def changed(self) -> str | None:
        for path, mtime in self.mtimes.items():
            if _mtime(path) != mtime:
                return path
        return None

    def close(self) -> None:
        """Nothing to release; here so that both engines can be closed alike."""


class InotifyWatcher:
    """inotify through watchfiles, in a daemon thread; ``changed()`` costs no system call."""

    def __init__(self, extra_files: Iterable[str] = ()) -> None:
        import watchfiles  # optional: make_watcher picks this engine only when it is installed

        self.files = frozenset(watched_files(extra_files))
        self.changes: list[str] = []  # appended by the thread, read by the loop (GIL-atomic)
        self.stop = threading.Event()
        directories = sorted({os.path.dirname(path) for path in self.files})
        self.thread = threading.Thread(target=self._watch, args=(watchfiles, directories),
                                       name="prefork-reload", daemon=True)
        self.thread.start()

    def _watch(self, watchfiles: Any, directories: list[str]) -> None:
        for batch in watchfiles.watch(*directories, watch_filter=None, recursive=False,
                                      debounce=DEBOUNCE_MS, stop_event=self.stop,
                                      raise_interrupt=False):
            self.changes.extend(path for _, path in batch if path in self.files)

    def changed(self) -> str | None:
        return self.changes[0] if self.changes else None

    def close(self) -> None:
        """Stop the thread (it notices within watchfiles' step, 50 ms)."""
        self.stop.set()


def have_watchfiles() -> bool:
    return importlib.util.find_spec("watchfiles") is not None


def check_engine(cfg: Config) -> None:
    """--reload-engine inotify without watchfiles is a start-up error, not a silent poll."""
    if cfg.reload and cfg.reload_engine == "inotify" and not have_watchfiles():
        raise ConfigError("--reload-engine: inotify needs the watchfiles package "
                          "(pip install prefork[reload])")


def make_watcher(cfg: Config) -> SourceWatcher | InotifyWatcher:
    """The watcher --reload-engine asks for, watching the modules imported so far and
    --reload-extra-file. Create it after the application is imported."""
    if cfg.reload_engine == "inotify" or (cfg.reload_engine == "auto" and have_watchfiles()):
        return InotifyWatcher(cfg.reload_extra_files)
    return SourceWatcher(cfg.reload_extra_files)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0
