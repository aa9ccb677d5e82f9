"""How many CPUs this process may really use: what `-w auto` (and `WEB_CONCURRENCY=auto`) means.

Why not ``os.cpu_count()``: in a container it reports the host's cores. A pod limited to
1.5 CPUs on a 64-core node would start 64 workers that the kernel then throttles to 1.5 CPUs'
worth of time per period — each request slower, memory 40x what it needs. The limits a process
lives under are, in the order they are read:

1. the CPU quota of its cgroup and of every ancestor (the smallest wins): cgroup v2
   ``cpu.max`` (``QUOTA PERIOD`` or ``max PERIOD``), else cgroup v1 ``cpu.cfs_quota_us`` /
   ``cpu.cfs_period_us`` (-1: none) — the numbers Kubernetes writes for ``limits.cpu``;
2. the affinity mask (``sched_getaffinity``: ``taskset``, cpuset, ``docker --cpuset-cpus``).

The rule: **workers = the quota in CPUs rounded up, at most the CPUs in the affinity mask, at
least 1**; without a quota, the CPUs in the affinity mask. Rounded up, because a fractional
CPU is still time a worker can use (1.5 CPUs -> 2 workers, throttled together to 1.5), and a
worker per usable CPU because each worker's event loop keeps one CPU busy with a CPU-bound app;
I/O-bound apps add ``--threads`` rather than workers beyond the quota.

Where the cgroup files are is read, not guessed: ``/proc/self/cgroup`` names the process's
cgroup in each hierarchy, ``/proc/self/mountinfo`` where each hierarchy is mounted (hybrid
hosts mount v2 at ``/sys/fs/cgroup/unified`` and v1 ``cpu`` beside it). Every path is taken
under ``root``, so tests can hand over a fake tree.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Final

V2_FILE: Final = "cpu.max"
V1_QUOTA: Final = "cpu.cfs_quota_us"
V1_PERIOD: Final = "cpu.cfs_period_us"


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process may use: ``quota`` in CPUs (None: no quota) read from ``source``,
    and ``affinity``, the CPUs it may be scheduled on."""

    quota: float | None
    source: str | None
    affinity: int

    @property
    def workers(self) -> int:
        """The documented rule (module docstring)."""
        if self.quota is None:
            return max(1, self.affinity)
        return max(1, min(math.ceil(self.quota), self.affinity))

    def explain(self) -> str:
        """Why ``workers`` is what it is, for --print-config."""
        quota = f"CPU quota {self.quota:g} ({self.source})" if self.quota is not None else "no CPU quota"
        return f"auto: {quota}, {self.affinity} CPU(s) in the affinity mask"


class WorkerCount(int):
    """A worker count that `auto` resolved to; ``budget`` says from what (--print-config)."""

    budget: CpuBudget

    def __new__(cls, budget: CpuBudget) -> WorkerCount:
        count = super().__new__(cls, budget.workers)
        count.budget = budget
        return count


def cpu_budget(root: str = "/") -> CpuBudget:
    """The quota and affinity of the calling process; files under ``root`` (a fake tree in
    tests). A file that cannot be read or parsed counts as no limit from it."""
    affinity = len(os.sched_getaffinity(0))
    cgroups = _read(root, "proc/self/cgroup")
    mounts = _read(root, "proc/self/mountinfo")
    if cgroups is None or mounts is None:
        return CpuBudget(None, None, affinity)
    for version in (2, 1):
        found = _quota(root, version, cgroups, mounts)
        if found is not None:
            return CpuBudget(found, f"cgroup v{version} {V2_FILE if version == 2 else V1_QUOTA}", affinity)
    return CpuBudget(None, None, affinity)


def _quota(root: str, version: int, cgroups: str, mounts: str) -> float | None:
    """The smallest quota in CPUs on the way from our cgroup up to its hierarchy's root."""
    path = _cgroup_path(cgroups, version)
    mount = _mount(mounts, version)
    if path is None or mount is None:
        return None
    mount_root, mountpoint = mount
    inside = path == mount_root or path.startswith(mount_root.rstrip("/") + "/")
    relative = path[len(mount_root):] if inside else ""  # else a cgroup namespace's own root
    directory = os.path.join(root, mountpoint.lstrip("/"))
    quotas = []
    for part in ["", *filter(None, relative.split("/"))]:  # the hierarchy's root first
        directory = os.path.join(directory, part)
        quota = _v2_quota(directory) if version == 2 else _v1_quota(directory)
        if quota is not None:
            quotas.append(quota)
    return min(quotas, default=None)


def _cgroup_path(cgroups: str, version: int) -> str | None:
    """Our cgroup in the v2 hierarchy (``0::/path``) or the v1 one holding ``cpu``."""
    for line in cgroups.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if version == 2 and parts[0] == "0" and controllers == "":
            return path
        if version == 1 and "cpu" in controllers.split(","):
            return path
    return None


def _mount(mounts: str, version: int) -> tuple[str, str] | None:
    """(root inside the hierarchy, mount point) of the v2 hierarchy or the v1 ``cpu`` one.
    mountinfo(5): ``ID PARENT DEV ROOT MOUNTPOINT OPTIONS [TAGS] - FSTYPE SOURCE SUPEROPTIONS``."""
    for line in mounts.splitlines():
        head, separator, tail = line.partition(" - ")
        fields, described = head.split(), tail.split()
        if not separator or len(fields) < 5 or len(described) < 3:
            continue
        fstype, superoptions = described[0], described[2].split(",")
        wanted = fstype == "cgroup2" if version == 2 else fstype == "cgroup" and "cpu" in superoptions
        if wanted:
            return _unescape(fields[3]), _unescape(fields[4])
    return None


def _v2_quota(directory: str) -> float | None:
    text = _read(directory, V2_FILE)
    parts = text.split() if text else []
    if len(parts) != 2 or parts[0] == "max":
        return None
    return _ratio(parts[0], parts[1])


def _v1_quota(directory: str) -> float | None:
    quota, period = _read(directory, V1_QUOTA), _read(directory, V1_PERIOD)
    if quota is None or period is None:
        return None
    return _ratio(quota.strip(), period.strip())


def _ratio(quota: str, period: str) -> float | None:
    """quota / period in CPUs; None for -1 (v1's "no quota") or anything unparsable."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _read(directory: str, name: str) -> str | None:
    try:
        with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field
