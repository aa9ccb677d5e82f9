"""Steady HTTP load from client threads, with an honest account of every failure.

Used by the lifecycle tests and by ``scripts/chaos.py``: keep-alive clients (a pooled
``requests.Session`` each) and one-request-per-connection clients hit a URL until stopped,
bounded in time and in count. Every request is either a success or a failure with a cause
(exception type or status), and the longest stretch without any success is measured: the
gap a user of the service would have noticed.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import requests

MAX_REQUESTS_PER_CLIENT = 200_000


@dataclass
class LoadResult:
    sent: int = 0
    succeeded: int = 0
    failures: collections.Counter = field(default_factory=collections.Counter)
    longest_gap: float = 0.0
    bodies: collections.Counter = field(default_factory=collections.Counter)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def summary(self) -> str:
        causes = ", ".join(f"{cause}: {n}" for cause, n in self.failures.most_common()) or "none"
        return (f"sent {self.sent}, succeeded {self.succeeded}, failed {self.failed} ({causes}), "
                f"longest gap without a success {self.longest_gap * 1000:.0f} ms")


class Load:
    """``with Load(url) as load: ...`` then ``load.result``."""

    def __init__(self, url: str, keepalive_clients: int = 3, close_clients: int = 2,
                 max_seconds: float = 120.0, timeout: float = 10.0, record_bodies: bool = False,
                 paths: Iterable[str] = ("/",)) -> None:
        self.url = url.rstrip("/")
        self.paths = list(paths)
        self.keepalive_clients = keepalive_clients
        self.close_clients = close_clients
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.record_bodies = record_bodies
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._successes: list[float] = []
        self.result = LoadResult()
        self._started = 0.0

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._started = time.monotonic()
        for n in range(self.keepalive_clients + self.close_clients):
            thread = threading.Thread(target=self._client, args=(n < self.keepalive_clients,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait_successes(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.result.succeeded < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"load: fewer than {count} successes after {timeout}s")
            time.sleep(0.01)

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        times = sorted(self._successes)
        gaps = [b - a for a, b in zip([self._started, *times], times)]
        self.result.longest_gap = max(gaps, default=0.0)
        return self.result

    def _client(self, keepalive: bool) -> None:
        session = requests.Session() if keepalive else None
        headers = {} if keepalive else {"Connection": "close"}
        deadline = self._started + self.max_seconds
        for n in range(MAX_REQUESTS_PER_CLIENT):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            url = self.url + self.paths[n % len(self.paths)]
            try:
                if session is not None:
                    response = session.get(url, timeout=self.timeout)
                else:
                    response = requests.get(url, headers=headers, timeout=self.timeout)
                cause = None if response.status_code < 500 else f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                cause = type(exc).__name__
                response = None
            with self._lock:
                self.result.sent += 1
                if cause is None:
                    self.result.succeeded += 1
                    self._successes.append(time.monotonic())
                    if self.record_bodies and response is not None:
                        self.result.bodies[response.text] += 1
                else:
                    self.result.failures[cause] += 1
        if session is not None:
            session.close()
