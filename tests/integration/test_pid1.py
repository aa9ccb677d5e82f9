"""prefork as a container's entrypoint: PID 1 of a new PID namespace (``unshare --pid --fork
--mount-proc``, as root). There the kernel re-parents every orphan to prefork, so it must reap
them all (or they stay zombies and fill the pid table), and its exit status is the
container's: 0 after a TERM (``docker stop``, a Kubernetes rollout).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest
import requests

from conftest import APPS, START_TIMEOUT, base_env, bound_listener, wait_for

UNSHARE = shutil.which("unshare")
ORPHANS = 100


def _can_unshare() -> bool:
    if UNSHARE is None or os.geteuid() != 0:
        return False
    probe = subprocess.run([UNSHARE, "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare(1) (util-linux)")


class Container:
    """prefork as PID 1 of its own PID namespace, on a socket bound here."""

    def __init__(self, *args: str) -> None:
        self.listener = bound_listener()
        self.port = self.listener.getsockname()[1]
        env = base_env(PREFORK_FD=str(self.listener.fileno()))
        self.unshare = subprocess.Popen(
            [UNSHARE, "--pid", "--fork", "--mount-proc", sys.executable, "-m", "prefork.server", *args],
            cwd=APPS, env=env, pass_fds=(self.listener.fileno(),),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.arbiter = wait_for(self._arbiter, START_TIMEOUT, message="prefork under unshare")
        self.listener.close()  # prefork holds the socket now; when it exits, connections are refused

    def _arbiter(self) -> psutil.Process | None:
        children = psutil.Process(self.unshare.pid).children()
        return children[0] if children else None

    def namespace_pid(self) -> int:
        """prefork's pid inside its namespace (the last NSpid entry)."""
        for line in open(f"/proc/{self.arbiter.pid}/status"):
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
        raise AssertionError("no NSpid line")

    def children(self) -> list[psutil.Process]:
        try:
            return self.arbiter.children()
        except psutil.NoSuchProcess:
            return []

    def get(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=30)

    def stop(self) -> None:
        if self.unshare.poll() is None:
            self.unshare.kill()  # unshare --fork takes its child (PID 1) down with it
            self.unshare.wait(timeout=10)


@pytest.fixture
def container() -> Iterator[type[Container]]:
    made: list[Container] = []

    def start(*args: str) -> Container:
        box = Container(*args)
        made.append(box)
        return box
    yield start  # type: ignore[misc]
    for box in made:
        box.stop()


def _statuses(processes: list[psutil.Process]) -> list[str]:
    out = []
    for process in processes:
        try:
            out.append(process.status())
        except psutil.NoSuchProcess:
            pass
    return out


def test_pid1_reaps_orphans_and_exits_0_on_term(container):
    box = container("-w", "2", "orphans:app")
    assert box.namespace_pid() == 1
    wait_for(lambda: len(box.children()) == 2, START_TIMEOUT, message="2 workers")
    workers = {p.pid for p in box.children()}
    response = box.get(f"/orphans?{ORPHANS}")
    assert response.status_code == 200
    # The helper has exited: its children now belong to PID 1, prefork.
    adopted = wait_for(lambda: len(box.children()) - len(workers), 5, interval=0.01,
                       message="orphans re-parented to prefork")
    assert adopted > 0
    # They exit a second later; none may stay behind as a zombie.
    wait_for(lambda: {p.pid for p in box.children()} == workers, 15,
             message=f"every one of {ORPHANS} orphans reaped")
    assert psutil.STATUS_ZOMBIE not in _statuses(box.children())
    assert box.get("/orphans?1").status_code == 200  # the workers were never disturbed
    box.arbiter.send_signal(signal.SIGTERM)
    assert box.unshare.wait(timeout=30) == 0
