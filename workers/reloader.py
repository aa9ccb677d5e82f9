"""``--reload`` (development): notice that the application's source changed.

The Werkzeug reloader's stat-polling idea inside the pre-fork model: a worker records the
mtime of every file its imported modules came from, and checks them once a second. When one
changes it asks the arbiter for a HUP — the same gap-free reload production uses — so a
syntax error in the edited file leaves the old workers serving and the error in the log.
"""

from __future__ import annotations

import os
import sys


def module_files() -> list[str]:
    """The source files of every module imported so far (the stdlib included: cheap enough
    for development, and it catches edits anywhere on sys.path)."""
    files = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith((".py", ".pyc")) and os.path.isfile(path):
            files.append(path[:-1] if path.endswith(".pyc") and os.path.isfile(path[:-1]) else path)
    return files


class SourceWatcher:
    """Remembers mtimes; ``changed()`` names the first file whose mtime moved."""

    def __init__(self) -> None:
        self.mtimes = {path: _mtime(path) for path in module_files()}

    def changed(self) -> str | None:
        for path, mtime in self.mtimes.items():
            if _mtime(path) != mtime:
                return path
        return None


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0
