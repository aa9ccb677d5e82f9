"""The arbiter collects every child that exits, workers or not: as PID 1 in a container it
inherits every orphan, and one it never collects stays a zombie in the pid table."""

from __future__ import annotations

import os
import time

from inchild import in_child

from prefork.server.signals import SignalQueue
from prefork.server.workerset import WorkerSet
from prefork.workers.scoreboard import Scoreboard

WAIT = 5.0


def _exited_child() -> int:
    """A child that exits at once; returned once it is a zombie waiting to be collected."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                return pid
        time.sleep(0.005)
    raise AssertionError(f"child {pid} did not exit")


def _is_collected(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_an_orphan_is_collected_even_when_no_worker_is_left():
    def work() -> None:  # in a child of its own: waitpid(-1) must not collect pytest's children
        workers = WorkerSet(Scoreboard(capacity=1), SignalQueue(), hook=lambda *args: None,
                            shed_in_child=lambda: None)
        assert not workers.by_pid  # all workers gone (a crash loop's pause, or the last instant)
        orphan = _exited_child()
        assert workers.reap() == []
        assert _is_collected(orphan)
        assert workers.reap(block=True) == []  # and a blocking reap does not wait on no one

    in_child(work)
