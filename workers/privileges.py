"""Dropping root in a worker, after the arbiter bound the sockets.

The arbiter keeps its privileges (it may need to bind a new low port on HUP, or re-exec);
workers, which run application code facing the network, give them up right after fork and
before the app is imported. The order matters: supplementary groups and the gid go first,
while we still may change them; the uid last.
"""

from __future__ import annotations

import grp
import os
import pwd


def resolve_user(user: str | None, group: str | None) -> tuple[int | None, int | None]:
    """Names or numeric ids -> (uid, gid); a user's primary group when no group is given."""
    uid = gid = None
    if user is not None:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    if group is not None:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid


def drop_privileges(user: str | None, group: str | None, umask: int | None) -> None:
    """Become ``user``/``group`` with ``umask`` (None: keep the inherited one); raises
    OSError/KeyError if we cannot."""
    if umask is not None:
        os.umask(umask)
    uid, gid = resolve_user(user, group)
    if gid is not None and gid != os.getegid():
        if uid is not None:
            os.initgroups(pwd.getpwuid(uid).pw_name, gid)
        else:
            os.setgroups([gid])
        os.setgid(gid)
    if uid is not None and uid != os.geteuid():
        os.setuid(uid)
