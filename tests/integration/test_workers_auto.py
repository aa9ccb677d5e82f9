"""`-w auto`: one worker per CPU the process may really use (config/cpus.py's rule: the cgroup
CPU quota rounded up, at most the affinity mask, at least 1).

Two layers. Fake cgroup trees (``cpu_budget(root)``) pin the reading of cgroup v2 ``cpu.max``,
v1 ``cpu.cfs_quota_us`` and the ancestors, on any host. Then real cgroups: as root, the test
creates a child cgroup with a 1.5-CPU (and a 0.5-CPU) quota, starts prefork inside it, and
checks what ``--print-config`` and the running server say. This sandbox mounts cgroup v1's
``cpu`` controller writable (its v2 hierarchy has no cpu controller); a host with a writable v2
``cpu.max`` is used the same way. Where neither can be created, those tests skip and say so.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import APPS, base_env, prefork_command, wait_for
from prefork.config.cpus import cpu_budget

AFFINITY = len(os.sched_getaffinity(0))
HOST_CPUS = os.cpu_count() or 1

V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
V1_MOUNTS = ("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
             "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
             "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")


def fake_tree(tmp_path: Path, cgroup: str, mounts: str, files: dict[str, str]) -> str:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    (tmp_path / "proc/self/mountinfo").write_text(mounts)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


def expected(quota: float | None) -> int:
    """The documented rule, written out independently of the implementation."""
    if quota is None:
        return AFFINITY
    return max(1, min(math.ceil(quota), AFFINITY))


@pytest.mark.parametrize("cpu_max, quota", [
    ("150000 100000\n", 1.5),
    ("50000 100000\n", 0.5),
    ("400000 100000\n", 4.0),
    ("max 100000\n", None),
    ("garbage\n", None),
])
def test_cgroup_v2_cpu_max(tmp_path, cpu_max, quota):
    root = fake_tree(tmp_path, "0::/kubepods/pod1/ctr\n", V2_MOUNTS,
                     {"sys/fs/cgroup/kubepods/pod1/ctr/cpu.max": cpu_max})
    budget = cpu_budget(root)
    assert budget.quota == quota
    assert budget.workers == expected(quota)
    assert budget.workers <= HOST_CPUS


def test_cgroup_v2_an_ancestor_with_a_smaller_quota_wins(tmp_path):
    root = fake_tree(tmp_path, "0::/a/b\n", V2_MOUNTS,
                     {"sys/fs/cgroup/a/cpu.max": "100000 100000\n",
                      "sys/fs/cgroup/a/b/cpu.max": "300000 100000\n"})
    assert cpu_budget(root).quota == 1.0


@pytest.mark.parametrize("quota_us, period_us, quota", [
    ("150000", "100000", 1.5), ("-1", "100000", None), ("25000", "100000", 0.25)])
def test_cgroup_v1_cfs_quota(tmp_path, quota_us, period_us, quota):
    # A hybrid host: v2 mounted (without cpu) beside v1's cpu,cpuacct hierarchy.
    root = fake_tree(tmp_path, "4:cpu,cpuacct:/docker/abc\n0::/\n", V1_MOUNTS,
                     {"sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": quota_us,
                      "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": period_us})
    budget = cpu_budget(root)
    assert budget.quota == quota
    assert budget.source == (None if quota is None else "cgroup v1 cpu.cfs_quota_us")
    assert budget.workers == expected(quota)


def test_a_container_sees_its_own_cgroup_at_the_mount_root(tmp_path):
    """With a cgroup namespace (or Docker's v1 bind mount), /proc/self/cgroup may name a path
    the mount does not start with: the mount itself is our cgroup."""
    mounts = "32 31 0:29 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
    root = fake_tree(tmp_path, "3:cpu:/docker/abc\n", mounts,
                     {"sys/fs/cgroup/cpu/cpu.cfs_quota_us": "50000",
                      "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"})
    assert cpu_budget(root).quota == 0.5


def test_no_cgroup_files_means_the_affinity_mask(tmp_path):
    budget = cpu_budget(str(tmp_path))
    assert budget.quota is None and budget.workers == AFFINITY


# -- real cgroups -----------------------------------------------------------------------------


def _v1_cpu_dir() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        head, _, tail = line.partition(" - ")
        described = tail.split()
        if len(described) >= 3 and described[0] == "cgroup" and "cpu" in described[2].split(","):
            return Path(head.split()[4])
    return None


class RealCgroup:
    """A child cgroup with a CPU quota, v2 if the host's v2 hierarchy has the cpu controller,
    else v1's cpu controller; ``preexec`` moves a child process into it."""

    def __init__(self, quota_us: int, period_us: int = 100000) -> None:
        name = f"prefork-test-{uuid.uuid4().hex[:8]}"
        self.path: Path | None = None
        v2 = Path("/sys/fs/cgroup")
        if (v2 / "cgroup.controllers").exists() and "cpu" in (v2 / "cgroup.controllers").read_text().split():
            self.path = v2 / name
            self.path.mkdir()
            (self.path / "cpu.max").write_text(f"{quota_us} {period_us}\n")
            return
        v1 = _v1_cpu_dir()
        if v1 is None:
            raise PermissionError("no cgroup hierarchy with the cpu controller")
        self.path = v1 / name
        self.path.mkdir()
        (self.path / "cpu.cfs_period_us").write_text(str(period_us))
        (self.path / "cpu.cfs_quota_us").write_text(str(quota_us))

    def preexec(self) -> None:
        with open(self.path / "cgroup.procs", "w") as f:  # type: ignore[operator]
            f.write(str(os.getpid()))

    def remove(self) -> None:
        if self.path is not None:
            self.path.rmdir()


@pytest.fixture
def cgroup():
    made: list[RealCgroup] = []

    def make(quota_us: int) -> RealCgroup:
        try:
            group = RealCgroup(quota_us)
        except OSError as exc:
            pytest.skip(f"cannot create a cgroup with a CPU quota here ({exc}); "
                        "the fake-tree tests above cover the reading")
        made.append(group)
        return group
    yield make
    for group in made:
        group.remove()


def print_config(group: RealCgroup, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(prefork_command("--print-config", *args, "basic:app"), cwd=APPS,
                            env=base_env(**(env or {})), preexec_fn=group.preexec,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return next(line for line in result.stdout.splitlines() if line.startswith("workers = "))


@pytest.mark.parametrize("quota_us, quota", [(150000, 1.5), (50000, 0.5)])
def test_workers_auto_in_a_real_cgroup_with_a_quota(cgroup, quota_us, quota):
    group = cgroup(quota_us)
    line = print_config(group, "-w", "auto")
    workers = int(re.match(r"workers = (\d+)", line).group(1))  # type: ignore[union-attr]
    assert workers == expected(quota)
    assert 1 <= workers <= HOST_CPUS
    assert f"CPU quota {quota:g}" in line
    assert print_config(group, env={"WEB_CONCURRENCY": "auto"}) == line


def test_a_server_started_with_workers_auto_runs_that_many(cgroup, tmp_path):
    group = cgroup(150000)
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(prefork_command("-w", "auto", "-b", "127.0.0.1:0", "basic:app"), cwd=APPS,
                                env=base_env(), preexec_fn=group.preexec, stdout=log, stderr=subprocess.STDOUT)
    try:
        want = expected(1.5)
        wait_for(lambda: len(psutil.Process(proc.pid).children()) == want, 20, message=f"{want} workers")
        assert Path(f"/proc/{proc.pid}/cgroup").read_text().count(group.path.name) >= 1  # type: ignore[union-attr]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
