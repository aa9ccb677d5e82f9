"""Run a piece of a test in a forked child, as a worker (or an arbiter) would run it.

The child's exit status carries the verdict: 0 when ``work()`` returned, 1 when it raised (the
traceback goes to stderr, which pytest shows). The parent waits, bounded, and fails the test
otherwise — so an assertion inside ``work`` fails the test like any other.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable

import pytest

#: How long a child may take.
CHILD_WAIT = 5.0


def in_child(work: Callable[[], None], timeout: float = CHILD_WAIT) -> None:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        except BaseException:  # reported through the exit status, not swallowed
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "the child's part of the test failed"
            return
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("child did not finish")
