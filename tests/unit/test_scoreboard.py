"""The scoreboard across a real fork: what a worker writes through its Slot is what the arbiter,
`prefork status` and the metrics read; "ready" wakes the arbiter on its own eventfd; peers'
loads are read through the Slot, not by index arithmetic."""

from __future__ import annotations

import os
import select
import time

import pytest
from inchild import in_child

from prefork.config.settings import Config
from prefork.server.metrics import Metrics
from prefork.server.signals import SignalQueue
from prefork.server.view import ServerView
from prefork.server.workerset import WorkerProcess, WorkerSet
from prefork.workers.balance import ACCEPT_SLACK, AcceptBalance
from prefork.workers.exitcodes import ExitCause
from prefork.workers.scoreboard import BLOCKED_AFTER, DURATION_BUCKETS, Scoreboard, State

WAIT = 5.0


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_a_workers_gauges_and_readiness_reach_the_arbiter():
    board = Scoreboard(capacity=4)
    index = board.claim(generation=1, now=time.monotonic())
    slot = board.slot(index)
    assert not _readable(board.ready_fd, 0)

    def work() -> None:
        slot.set_pid(os.getpid())
        slot.set_connection_gauges(head=1, body=2, write=3, idle=4, closing=5, buffered=5000)
        slot.ask_replacement(ExitCause.MAX_MEMORY)
        slot.ready(time.monotonic())

    in_child(work)
    assert _readable(board.ready_fd, WAIT)  # the arbiter wakes without waiting for a tick
    assert not _readable(board.balance_fd, 0)  # and no peer's poke was used for it
    board.take_ready_news()
    assert not _readable(board.ready_fd, 0)
    view = board.view(index)
    assert (view.head, view.body, view.write, view.idle, view.closing, view.buffered) == (1, 2, 3, 4, 5, 5000)
    assert view.state == board.state(index) == State.READY
    assert view.retire_cause == board.retire_cause(index) == ExitCause.MAX_MEMORY
    assert board.heartbeat(index) == view.heartbeat > 0


def test_a_claimed_slot_starts_clean():
    board = Scoreboard(capacity=1)
    index = board.claim(1, time.monotonic())
    board.slot(index).set_connection_gauges(9, 9, 9, 9, 9, 9)
    board.slot(index).ask_replacement(ExitCause.MAX_REQUESTS)
    board.release(index)
    index = board.claim(2, time.monotonic())
    view = board.view(index)
    assert (view.head, view.body, view.write, view.idle, view.closing, view.buffered) == (0, 0, 0, 0, 0, 0)
    assert view.retire_cause == ExitCause.NONE and view.generation == 2 and view.state == State.BOOTING


@pytest.mark.parametrize("peers, mine, fair", [
    ([], 100, True),                     # alone: nobody to balance against
    ([0], 100, True),                    # one accepting worker: the same
    ([0, 0], ACCEPT_SLACK, True),        # within the slack of an idle peer
    ([0, 0], ACCEPT_SLACK + 1, False),   # over it
    ([40, 50], 45, True),                # a big count may exceed the least by an eighth
    ([40, 50], 46, False),
])
def test_accept_balance_compares_with_the_least_loaded_accepting_peer(peers, mine, fair):
    board = Scoreboard(capacity=4)
    slots = [board.slot(board.claim(1, time.monotonic())) for _ in peers]
    for slot, connections in zip(slots, peers):
        slot.publish_connections(connections)
    board.set_roster(list(range(len(peers))))  # the peers accept; we are the next slot
    balance = AcceptBalance(board.slot(board.claim(1, time.monotonic())))
    assert balance.fair(mine) is fair


def test_accept_balance_leaves_out_a_peer_stuck_in_its_app():
    """A worker inside a long request cannot accept: its few connections must not keep an
    idle peer from accepting (the new client would wait for that request)."""
    board = Scoreboard(capacity=4)
    stuck, other = (board.slot(board.claim(1, time.monotonic())) for _ in range(2))
    stuck.publish_connections(0)
    other.publish_connections(5)
    board.set_roster([0, 1])
    balance = AcceptBalance(board.slot(board.claim(1, time.monotonic())))
    assert not balance.fair(5)
    stuck.request_started(time.monotonic())  # a request just begun: the worker still counts
    assert not balance.fair(5)
    stuck.request_started(time.monotonic() - BLOCKED_AFTER - 0.01)
    assert balance.fair(5)


def test_metrics_sum_the_connection_gauges_of_live_workers():
    board = Scoreboard(capacity=4)
    workers = WorkerSet(board, SignalQueue(), hook=lambda *args: None, shed_in_child=lambda: None)
    for pid, gauges in ((101, (1, 0, 2, 3, 1, 1000)), (102, (0, 4, 1, 0, 1, 24))):
        index = board.claim(1, time.monotonic())
        board.slot(index).set_connection_gauges(*gauges)
        workers.by_pid[pid] = WorkerProcess(pid=pid, slot=index, generation=1, number=pid - 100,
                                            spawned_at=time.monotonic())
    text = Metrics(ServerView(os.getpid(), workers, Config), {}).render()
    for line in ('prefork_worker_connections{state="head"} 1', 'prefork_worker_connections{state="body"} 4',
                 'prefork_worker_connections{state="write"} 3', 'prefork_worker_connections{state="idle"} 3',
                 'prefork_worker_connections{state="closing"} 2',
                 "prefork_worker_buffered_bytes 1024"):
        assert line in text.splitlines()


def test_requests_are_counted_by_method_and_status_class_with_bytes_and_in_flight():
    board = Scoreboard(capacity=2)
    index = board.claim(1, time.monotonic())
    slot = board.slot(index)

    def work() -> None:
        slot.ready(time.monotonic())
        for method, status, duration in (("GET", 200, 0.001), ("GET", 204, 0.2), ("POST", 503, 3.0),
                                         ("PROPFIND", 404, 0.001), ("GET", 0, 0.001)):
            slot.request_started(time.monotonic())
            slot.request_finished(method, status, duration)
        slot.request_started(time.monotonic())  # one still in the app
        slot.add_traffic(300, 0)
        slot.add_traffic(1000, 42)
        slot.publish_counts()  # what the worker does once a second

    in_child(work)
    view = board.view(index)
    assert (view.requests, view.in_flight, view.received, view.sent) == (5, 1, 1300, 42)
    assert view.state == State.BUSY  # a request start is set
    no = [0] * (len(DURATION_BUCKETS) + 1)
    assert view.durations == {
        ("GET", "2xx"): (1, *no[1:5], 1, *no[6:], pytest.approx(0.201)),
        ("POST", "5xx"): (*no[:9], 1, 0, 0, 3.0),
        ("other", "4xx"): (1, *no[1:], 0.001),
    }  # a status outside 100-599 is a request without a histogram
