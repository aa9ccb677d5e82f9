"""The pidfile names the arbiter that is serving, and only while it serves.

Written atomically (a temporary file renamed over it), so a reader never sees it half
written. Removed on exit only if it still names us: after a USR2 upgrade the new arbiter
has already written its own pid there, and the old one must not delete it.
"""

from __future__ import annotations

import os


def write_pidfile(path: str, pid: int) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{pid}.tmp")
    with open(tmp, "w") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


def read_pidfile(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def remove_pidfile(path: str, pid: int) -> None:
    if read_pidfile(path) == pid:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
