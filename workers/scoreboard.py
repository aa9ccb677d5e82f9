"""The scoreboard: one shared-memory slot per worker, written by that worker, read by the arbiter.

Why shared memory: the arbiter must know that every worker is alive (heartbeat) and what it is
doing (state, requests, current request age, requests in flight, a duration histogram by method
and status class, bytes in and out, connections by state, bytes buffered) without any
per-request IPC. An anonymous ``MAP_SHARED`` mmap created before ``fork`` is seen by both sides
with plain loads and stores.

Why no lock: each slot has exactly one writer (its worker; the arbiter only writes a slot while
no worker owns it). Aligned 8-byte words are written atomically on the platforms we run on, so a
reader may see a slot between two field updates but never a torn number.

Times are ``time.monotonic()`` values: CLOCK_MONOTONIC is system-wide, so a worker's heartbeat
and the arbiter's clock compare directly, and a wall-clock jump (NTP, an operator's ``date``)
can never make every worker look hung.

The slot layout (the word offsets below) is known to this module only: a worker writes through
:class:`Slot`'s named methods, the arbiter reads through :class:`Scoreboard`'s accessors and
:class:`SlotView` snapshots, and :mod:`prefork.workers.balance` asks :class:`Slot` about its
peers' loads.

Two eventfds travel with the scoreboard, each with one job. ``ready_fd``: a worker that has
loaded its app (:meth:`Slot.ready`), or that asks to be replaced (:meth:`Slot.ask_replacement`),
writes it and the arbiter, which alone reads it, wakes at once (a reload completes, a
replacement starts booting, without waiting for the next tick). ``balance_fd``: a worker that
stops accepting pokes its peers (balance.py); only workers watch it, edge-triggered, so no
reader can swallow a poke meant for another.

After the roster, one word the arbiter alone writes for every worker to read: the server is
*stopping* (a TERM arrived: --shutdown-delay, then the drain), so a health check answers 503
(workers/health.py) while the workers go on serving.
"""

from __future__ import annotations

import bisect
import enum
import mmap
import os
import time
from dataclasses import dataclass
from typing import Final

from .exitcodes import ExitCause


class State(enum.IntEnum):
    """What a worker is doing, as the arbiter and ``prefork status`` see it."""

    FREE = 0       # slot unused
    BOOTING = 1    # forked, importing the app
    READY = 2      # accepting, between requests
    BUSY = 3       # inside a request
    RETIRING = 4   # no longer accepting; finishing in-flight work


#: A worker inside one request for longer than this (seconds) is not accepting: accept
#: balancing leaves it out (Slot.fewest_peer_connections). Short enough that a new client waits
#: little for an idle peer; long enough that a worker serving quick requests still counts.
BLOCKED_AFTER: Final = 0.1
#: Request-duration histogram bucket bounds in seconds (Prometheus' default buckets).
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Methods with a histogram of their own; any other method counts as OTHER_METHOD. A fixed
#: list keeps the slot's size fixed and a scraper's series bounded, whatever clients send.
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
OTHER_METHOD: Final = "other"
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")
_METHOD_INDEX: Final = {method: i for i, method in enumerate(METHODS)}
_OTHER_INDEX: Final = len(METHODS)

# Word offsets inside a slot. Integers and floats share the same 8-byte words through two
# memoryview casts of one buffer; each offset is used with one type only.
PID: Final = 0
GENERATION: Final = 1
STATE: Final = 2
REQUESTS: Final = 3
HEARTBEAT: Final = 4          # float
REQUEST_START: Final = 5      # float, 0.0 when idle
BOOTED_AT: Final = 6          # float, when the worker became READY
IN_FLIGHT: Final = 7          # --threads: requests inside the application now (one thread: see view)
RECEIVED: Final = 8           # bytes read from HTTP clients: request heads and bodies
SENT: Final = 9               # response body bytes that reached the client's socket
CONNECTIONS: Final = 10       # open client connections (accept balancing, status)
RETIRE_CAUSE: Final = 11      # why a worker asks to be replaced: an ExitCause value (NONE: it does not)
CONNECTION_GAUGES: Final = 12  # 5 words: connections in HEAD, BODY, WRITE, idle keep-alive, closing
BUFFERED: Final = 17          # bytes of request and response buffers held (memory + spool files)
#: Then one histogram per (method, status class): a count per bucket, one for +Inf, and the
#: sum of durations (a float), HISTOGRAM_WORDS words each, method-major.
HISTOGRAMS: Final = 18
HISTOGRAM_WORDS: Final = len(DURATION_BUCKETS) + 2
_HISTOGRAM_SUM: Final = HISTOGRAM_WORDS - 1

WORDS_PER_SLOT: Final = HISTOGRAMS + (len(METHODS) + 1) * len(STATUS_CLASSES) * HISTOGRAM_WORDS

#: Enough for any sane worker count through a reload (two generations) and TTIN growth.
DEFAULT_CAPACITY: Final = 1024


@dataclass(frozen=True)
class SlotView:
    """A snapshot of one slot, for the arbiter, the status view and metrics."""

    index: int
    pid: int
    generation: int
    state: State
    requests: int
    heartbeat: float
    request_start: float
    booted_at: float
    in_flight: int
    received: int  # bytes read from clients
    sent: int      # response body bytes sent
    #: (method, status class) -> (count per bucket of DURATION_BUCKETS, +Inf, sum of seconds);
    #: only pairs that have served a request.
    durations: dict[tuple[str, str], tuple[float, ...]]
    retire_cause: ExitCause
    head: int      # connections reading a request head
    body: int      # connections reading a request body
    write: int     # connections sending a response
    idle: int      # keep-alive connections waiting for their next request
    closing: int   # closed after an early answer, reading what the client still sends
    buffered: int  # bytes held in request and response buffers, memory and spool


class Scoreboard:
    """The shared slots. Create it in the arbiter before forking any worker.

    After the slots comes the *roster*: the count, then the slot base offsets, of the workers
    that accept connections now (ready, not retiring), written by the arbiter so a worker can
    compare its load with its peers' (workers/balance.py). See the module docstring for
    ``ready_fd`` and ``balance_fd``.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.roster = capacity * WORDS_PER_SLOT
        self.stopping_word = self.roster + 1 + capacity
        self._map = mmap.mmap(-1, (self.stopping_word + 1) * 8)
        self.ints = memoryview(self._map).cast("q")
        self.floats = memoryview(self._map).cast("d")
        self._free = list(range(capacity - 1, -1, -1))
        self._roster: list[int] = []
        self.balance_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ready_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def set_roster(self, indices: list[int]) -> None:
        """Publish which slots accept connections (only when it changed)."""
        if indices == self._roster:
            return
        self._roster = indices
        ints = self.ints
        for n, index in enumerate(indices):
            ints[self.roster + 1 + n] = index * WORDS_PER_SLOT
        ints[self.roster] = len(indices)

    def announce_stopping(self) -> None:
        """The server stops: from now on every worker's health check answers 503."""
        self.ints[self.stopping_word] = 1

    @property
    def stopping(self) -> bool:
        return bool(self.ints[self.stopping_word])

    def claim(self, generation: int, now: float) -> int:
        """Take a free slot for a worker about to be forked; the heartbeat starts now so a
        worker that hangs while importing the app is caught by the same timeout."""
        if not self._free:
            raise RuntimeError(f"scoreboard full ({self.capacity} workers)")
        index = self._free.pop()
        base = index * WORDS_PER_SLOT
        self.ints[base:base + WORDS_PER_SLOT] = memoryview(bytes(WORDS_PER_SLOT * 8)).cast("q")
        self.ints[base + GENERATION] = generation
        self.ints[base + STATE] = State.BOOTING
        self.floats[base + HEARTBEAT] = now
        return index

    def release(self, index: int) -> None:
        """Give a reaped worker's slot back (its final counters are read before this)."""
        self.ints[index * WORDS_PER_SLOT + STATE] = State.FREE
        self._free.append(index)

    def take_ready_news(self) -> None:
        """The arbiter woke on ``ready_fd``: consume the wakeup (the news itself is each
        slot's state, read with :meth:`state`)."""
        try:
            os.eventfd_read(self.ready_fd)
        except BlockingIOError:
            pass

    def state(self, index: int) -> State:
        """The worker's state: BUSY while it runs a request (the slot's request start is set),
        else what the worker last said."""
        base = index * WORDS_PER_SLOT
        state = State(self.ints[base + STATE])
        if state == State.READY and self.floats[base + REQUEST_START]:
            return State.BUSY
        return state

    def heartbeat(self, index: int) -> float:
        """The worker's last sign of life (``time.monotonic()``)."""
        return self.floats[index * WORDS_PER_SLOT + HEARTBEAT]

    def retire_cause(self, index: int) -> ExitCause:
        """Why the worker asks to be replaced (MAX_REQUESTS, MAX_MEMORY), or ExitCause.NONE."""
        return ExitCause(self.ints[index * WORDS_PER_SLOT + RETIRE_CAUSE])

    def view(self, index: int) -> SlotView:
        base = index * WORDS_PER_SLOT
        ints, floats = self.ints, self.floats
        durations = {}
        block = base + HISTOGRAMS
        for method in (*METHODS, OTHER_METHOD):
            for status_class in STATUS_CLASSES:
                counts = ints[block:block + _HISTOGRAM_SUM]
                if any(counts):
                    durations[method, status_class] = (*counts, floats[block + _HISTOGRAM_SUM])
                block += HISTOGRAM_WORDS
        return SlotView(
            index=index,
            pid=ints[base + PID],
            generation=ints[base + GENERATION],
            state=self.state(index),
            requests=ints[base + REQUESTS],
            heartbeat=floats[base + HEARTBEAT],
            request_start=floats[base + REQUEST_START],
            booted_at=floats[base + BOOTED_AT],
            # one thread: a request is in the app while its start is set; --threads: counted
            in_flight=ints[base + IN_FLIGHT] or int(floats[base + REQUEST_START] != 0.0),
            received=ints[base + RECEIVED],
            sent=ints[base + SENT],
            durations=durations,
            retire_cause=ExitCause(ints[base + RETIRE_CAUSE]),
            head=ints[base + CONNECTION_GAUGES],
            body=ints[base + CONNECTION_GAUGES + 1],
            write=ints[base + CONNECTION_GAUGES + 2],
            idle=ints[base + CONNECTION_GAUGES + 3],
            closing=ints[base + CONNECTION_GAUGES + 4],
            buffered=ints[base + BUFFERED],
        )

    def slot(self, index: int) -> "Slot":
        return Slot(self, index)


class Slot:
    """A worker's handle on its own slot. The per-request methods are the hot path: what a
    watcher must see while a request runs (its start, BUSY, in flight) is stored in shared
    memory at once; the counters and histograms are kept in this process and published by
    ``publish_counts``, once a second (a memoryview store per counter per request cost more
    than a microsecond, a tenth of a hello-world request)."""

    __slots__ = ("ints", "floats", "base", "roster", "stopping_word", "balance_fd", "ready_fd",
                 "_requests", "_histograms")

    def __init__(self, board: Scoreboard, index: int) -> None:
        self.ints = board.ints
        self.floats = board.floats
        self.base = index * WORDS_PER_SLOT
        self.roster = board.roster
        self.stopping_word = board.stopping_word
        self.balance_fd = board.balance_fd
        self.ready_fd = board.ready_fd
        self._requests = 0
        #: histogram number -> [count per bucket..., +Inf, sum of seconds], as in the slot
        self._histograms: dict[int, list[float]] = {}

    def set_pid(self, pid: int) -> None:
        self.ints[self.base + PID] = pid

    def set_state(self, state: State) -> None:
        self.ints[self.base + STATE] = state

    def heartbeat(self, now: float) -> None:
        self.floats[self.base + HEARTBEAT] = now

    def heartbeat_cell(self) -> tuple[memoryview, int]:
        """Where ``heartbeat`` stores, for the worker's loop: it beats every turn, and a store
        through these costs less than the call."""
        return self.floats, self.base + HEARTBEAT

    def ready(self, now: float) -> None:
        """The app is loaded and the worker accepts: say so in the slot, then wake the arbiter
        (a reload waiting for this worker completes now, not on its next tick). Call once."""
        self.floats[self.base + BOOTED_AT] = now
        self.floats[self.base + HEARTBEAT] = now
        self.ints[self.base + STATE] = State.READY
        os.eventfd_write(self.ready_fd, 1)

    def request_started(self, now: float) -> None:
        """A request enters the app: what a watcher must see while it runs is stored now — its
        start, which also makes the worker BUSY and counts one in flight (Scoreboard.view)."""
        self.floats[self.base + REQUEST_START] = now

    def request_finished(self, method: str, status: int, duration: float) -> None:
        """Count the request in its (method, status class) histogram: a dict lookup and a
        bisect, in this process (see publish_counts). A status outside 100-599 counts in
        REQUESTS only."""
        self._requests += 1
        cls = status // 100
        if 1 <= cls <= 5:
            number = _METHOD_INDEX.get(method, _OTHER_INDEX) * 5 + cls - 1
            histogram = self._histograms.get(number)
            if histogram is None:
                histogram = self._histograms[number] = [0] * HISTOGRAM_WORDS
            histogram[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
            histogram[_HISTOGRAM_SUM] += duration
        self.floats[self.base + REQUEST_START] = 0.0

    def in_request(self) -> bool:
        """A request is inside the app (a signal handler asks: no hot path)."""
        return self.floats[self.base + REQUEST_START] != 0.0

    def set_in_flight(self, count: int) -> None:
        """With --threads several requests run at once: the pool keeps the count."""
        self.ints[self.base + IN_FLIGHT] = count

    def publish_counts(self) -> None:
        """Copy the request counters and histograms into the slot (absolute values)."""
        base = self.base
        ints = self.ints
        floats = self.floats
        ints[base + REQUESTS] = self._requests
        for number, histogram in self._histograms.items():
            block = base + HISTOGRAMS + number * HISTOGRAM_WORDS
            for offset in range(_HISTOGRAM_SUM):
                ints[block + offset] = histogram[offset]
            floats[block + _HISTOGRAM_SUM] = histogram[_HISTOGRAM_SUM]

    def add_traffic(self, received: int, sent: int) -> None:
        """Bytes read from clients (heads and bodies) and response body bytes that reached
        their sockets, since the last call (the worker sums them and publishes once a second)."""
        ints = self.ints
        ints[self.base + RECEIVED] += received
        ints[self.base + SENT] += sent

    def ask_replacement(self, cause: ExitCause) -> None:
        """The worker wants to be recycled (MAX_REQUESTS, MAX_MEMORY): the arbiter wakes, boots
        its replacement and retires it for ``cause`` once the replacement is ready. Any thread."""
        self.ints[self.base + RETIRE_CAUSE] = cause
        os.eventfd_write(self.ready_fd, 1)

    def requests(self) -> int:
        """Requests this worker has finished (its own count: --max-requests reads it)."""
        return self._requests

    def server_stopping(self) -> bool:
        """The arbiter has announced a stop (Scoreboard.announce_stopping)."""
        return bool(self.ints[self.stopping_word])

    def set_connection_gauges(self, head: int, body: int, write: int, idle: int, closing: int,
                              buffered: int) -> None:
        """What the worker's connections are doing now: how many read a request head, read a
        body, send a response, wait idle between keep-alive requests, or linger after an early
        answer (workers/linger.py), and ``buffered``, the bytes their buffers hold (memory and
        spool). Six stores: call it once per loop turn."""
        ints = self.ints
        base = self.base + CONNECTION_GAUGES
        ints[base] = head
        ints[base + 1] = body
        ints[base + 2] = write
        ints[base + 3] = idle
        ints[base + 4] = closing
        ints[self.base + BUFFERED] = buffered

    def publish_connections(self, connections: int) -> None:
        """Open connections, for peers balancing accepts against ours."""
        self.ints[self.base + CONNECTIONS] = connections

    def fewest_peer_connections(self) -> int:
        """The fewest open connections held by a worker that accepts now (ourselves included),
        or -1 when fewer than two accept (no one to balance against). A worker inside one
        request for longer than BLOCKED_AFTER cannot accept now (its loop waits for the app)
        and is left out: a peer holding a few more connections than it would otherwise stay
        out of accepting while it idles, and new clients would wait for that request. Hot
        path: no syscall."""
        ints = self.ints
        floats = self.floats
        roster = self.roster
        count = ints[roster]
        if count < 2:
            return -1
        blocked_since = time.monotonic() - BLOCKED_AFTER
        fewest = -1
        for n in range(count):
            base = ints[roster + 1 + n]
            started = floats[base + REQUEST_START]
            if started and started < blocked_since:
                continue
            connections = ints[base + CONNECTIONS]
            if fewest < 0 or connections < fewest:
                fewest = connections
        return fewest
