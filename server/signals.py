"""The arbiter's signals: handlers that only enqueue, and the pipe that wakes the loop.

Why a queue: a signal handler runs between any two bytecodes of the main loop, so anything it
did beyond appending to a deque (logging, forking, touching the worker records) could meet the
loop half-way through the same work. ``signal.set_wakeup_fd`` writes the signal number to a
pipe the loop sleeps on, so a signal ends the sleep at once; the loop then pops the queue and
acts, in order, through one dispatch table (the arbiter's).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any, Final

#: Every signal the arbiter handles. CHLD only wakes the loop, which reaps on every turn.
SIGNALS: Final = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGTTIN,
                  signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)
#: A burst of real signals beyond this is dropped: the loop acts on the queue each turn.
MAX_QUEUED_SIGNALS: Final = 16


class SignalQueue:
    """Signals received and not yet acted on, and the wakeup pipe that reports them."""

    def __init__(self) -> None:
        self.queue: collections.deque[int] = collections.deque()
        self.wakeup_fd = -1
        self._wakeup_w = -1

    def install(self) -> None:
        """Create the wakeup pipe and take over SIGNALS. Main thread only."""
        self.wakeup_fd, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        """NO LOGGING, NO WORK: queue the signal for the main loop (CHLD needs no entry: the
        wakeup pipe already woke the loop, which reaps every turn)."""
        if signum != signal.SIGCHLD and len(self.queue) < MAX_QUEUED_SIGNALS:
            self.queue.append(signum)

    def enqueue(self, sig: int, count: int = 1) -> None:
        """Act on ``sig`` as if an operator had sent it ``count`` times (the control socket's
        commands). Not capped like real signals: a requested ``workers +20`` must not be cut."""
        self.queue.extend([sig] * count)

    def pop(self) -> Iterator[int]:
        """The queued signals, oldest first, including any queued while acting on them."""
        while self.queue:
            yield self.queue.popleft()

    def drain_wakeup(self) -> None:
        """Empty the wakeup pipe (the loop woke; what matters is in the queue)."""
        try:
            while os.read(self.wakeup_fd, 512):
                pass
        except BlockingIOError:
            pass

    @contextlib.contextmanager
    def blocked(self) -> Iterator[None]:
        """Hold SIGNALS back around ``fork()``: one arriving between the fork and the child's
        own handlers would run the arbiter's handler in the child and be lost (a TERM meant to
        retire a half-born worker of an abandoned reload, say). Blocked, it waits for them."""
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)

    def reset_in_child(self) -> None:
        """In a forked worker: default handlers, signals unblocked, the wakeup pipe closed."""
        signal.set_wakeup_fd(-1)
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        os.close(self.wakeup_fd)
        os.close(self._wakeup_w)
