"""StatsD: gunicorn's metric names, types and values, received by a real UDP (or unix datagram)
listener — from the client in this process, and from a real prefork server."""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_for
from prefork.config.logsetup import ERROR_LOGGER, setup_logging
from prefork.config.settings import Config
from prefork.config.statsd import MAX_DATAGRAM, normalize_prefix
from prefork.workers.statsd import StatsdClient


class Listener:
    """A datagram socket standing in for the statsd server."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address
        self.lines: list[str] = []
        self.received: list[bytes] = []  # every datagram so far

    def datagrams(self, timeout: float = 0.0) -> list[bytes]:
        """What has arrived; waits up to ``timeout`` for the first datagram."""
        received = []
        self.sock.settimeout(timeout)  # 0: non-blocking
        try:
            while True:
                received.append(self.sock.recv(65536))
                self.sock.setblocking(False)
        except (BlockingIOError, TimeoutError):
            pass
        self.received.extend(received)
        for datagram in received:
            self.lines.extend(datagram.decode("ascii").split("\n"))
        return received

    def wait_lines(self, enough, message: str, timeout: float = 10.0) -> None:
        """Receive until ``enough(lines)`` holds."""
        wait_for(lambda: self.datagrams(0.05) is None or enough(self.lines), timeout,
                 message=message)

    def wait_line(self, prefix: str, timeout: float = 10.0) -> str:
        def find() -> str | None:
            self.datagrams(0.05)
            return next((line for line in self.lines if line.startswith(prefix)), None)
        return wait_for(find, timeout, message=f"a statsd line {prefix!r}")  # type: ignore[return-value]


@pytest.fixture
def udp() -> Iterator[Listener]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield Listener(sock, f"127.0.0.1:{sock.getsockname()[1]}")
    sock.close()


def client(address: str, prefix: str = "", tags: str = "") -> StatsdClient:
    made = StatsdClient.from_config(Config(statsd_host=address, statsd_prefix=prefix,
                                           dogstatsd_tags=tags))
    assert made is not None
    return made


def test_no_statsd_host_means_no_client() -> None:
    assert StatsdClient.from_config(Config()) is None


def test_requests_are_sent_on_flush_in_gunicorns_names_and_types(udp: Listener) -> None:
    stats = client(udp.address, prefix="shop")
    stats.request(200, 0.0125)
    stats.request(200, 0.5)
    stats.request(404, 0.001)
    assert udp.datagrams() == []  # request() only records
    stats.flush()
    assert len(udp.datagrams(timeout=5)) == 1  # one turn, one datagram
    assert sorted(udp.lines) == sorted([
        "shop.gunicorn.request.duration:12.5|ms",
        "shop.gunicorn.request.duration:500.0|ms",
        "shop.gunicorn.request.duration:1.0|ms",
        "shop.gunicorn.requests:3|c|@1.0",
        "shop.gunicorn.request.status.200:2|c|@1.0",
        "shop.gunicorn.request.status.404:1|c|@1.0",
    ])
    stats.flush()
    assert udp.datagrams(timeout=0.2) == []  # nothing new, nothing sent


def test_dogstatsd_tags_end_every_line(udp: Listener) -> None:
    stats = client(udp.address, tags="env:prod,app:shop")
    stats.request(500, 0.002)
    stats.flush()
    udp.datagrams(timeout=5)
    assert udp.lines and all(line.endswith("|#env:prod,app:shop") for line in udp.lines)
    assert "gunicorn.request.status.500:1|c|@1.0|#env:prod,app:shop" in udp.lines


@pytest.mark.parametrize(("given", "used"), [
    ("", ""), ("shop", "shop."), ("shop.", "shop."), ("shop..", "shop."), ("a.b", "a.b."),
])
def test_prefix_gets_exactly_one_trailing_dot(given: str, used: str) -> None:
    assert normalize_prefix(given) == used


def test_a_busy_turn_is_split_into_datagrams_that_fit(udp: Listener) -> None:
    stats = client(udp.address)
    for _ in range(500):
        stats.request(200, 0.001)
    stats.flush()
    udp.wait_lines(lambda lines: "gunicorn.requests:500|c|@1.0" in lines, "the requests counter")
    assert len([line for line in udp.lines if "duration" in line]) == 500
    assert len(udp.received) > 1
    assert all(len(datagram) <= MAX_DATAGRAM for datagram in udp.received)


def test_workers_gauge_is_sent_when_the_count_changes(udp: Listener) -> None:
    stats = client(udp.address, prefix="shop")
    stats.workers(3)
    stats.flush()
    assert udp.wait_line("shop.gunicorn.workers") == "shop.gunicorn.workers:3|g"
    udp.lines.clear()
    stats.workers(3)
    stats.flush()
    assert udp.datagrams(timeout=0.2) == []
    stats.workers(4)
    stats.flush()
    assert udp.wait_line("shop.gunicorn.workers") == "shop.gunicorn.workers:4|g"


def test_an_absent_server_costs_no_exception(free_udp_port: int) -> None:
    stats = client(f"127.0.0.1:{free_udp_port}")
    for _ in range(3):  # loopback reports the refusal on the next send: counted, never raised
        stats.request(200, 0.001)
        stats.flush()
    assert stats.errors >= 1


def test_unix_datagram_socket(tmp_path: Path) -> None:
    path = tmp_path / "statsd.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        stats = client(f"unix://{path}")
        stats.request(204, 0.003)
        stats.close()
        sock.settimeout(5)
        assert b"gunicorn.request.status.204:1|c|@1.0" in sock.recv(65536).split(b"\n")
    finally:
        sock.close()


@pytest.fixture
def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def restore_error_logger() -> Iterator[None]:
    logger = logging.getLogger(ERROR_LOGGER)
    saved = list(logger.handlers), logger.level, logger.propagate
    yield
    setup_logging(Config())  # removes what the test installed
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.mark.usefixtures("restore_error_logger")
def test_log_records_are_counted_by_level(udp: Listener, tmp_path: Path) -> None:
    log = setup_logging(Config(statsd_host=udp.address, statsd_prefix="shop",
                               errorlog=str(tmp_path / "error.log")))
    log.info("not counted")
    log.warning("w")
    log.error("e")
    log.critical("c")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("x")
    udp.wait_lines(lambda lines: len(lines) >= 4, "4 log counters")
    assert sorted(udp.lines) == sorted(f"shop.gunicorn.log.{level}:1|c|@1.0"
                                       for level in ("warning", "error", "critical", "exception"))


# -- a real server -------------------------------------------------------------------------------

def test_server_counts_a_killed_worker_in_the_log_counters(start_server, udp: Listener) -> None:
    server = start_server("basic:app", "--statsd-host", udp.address, "--statsd-prefix", "shop",
                          workers=1)
    os.kill(next(iter(server.worker_pids())), signal.SIGKILL)
    line = udp.wait_line("shop.gunicorn.log.")
    assert line in ("shop.gunicorn.log.error:1|c|@1.0", "shop.gunicorn.log.warning:1|c|@1.0")


def test_server_sends_request_metrics(start_server, udp: Listener) -> None:
    server = start_server("basic:app", "--statsd-host", udp.address, "--statsd-prefix", "shop",
                          workers=1)
    for _ in range(3):
        assert server.get("/").status_code == 200
    assert server.get("/missing").status_code == 404
    udp.wait_line("shop.gunicorn.request.status.404")
    udp.wait_lines(lambda lines: sum(int(line.split(":")[1].split("|")[0]) for line in lines
                                     if line.startswith("shop.gunicorn.requests:")) >= 4,
                   "4 requests counted")
    durations = [line for line in udp.lines if line.startswith("shop.gunicorn.request.duration:")]
    assert len(durations) >= 4 and all(line.endswith("|ms") for line in durations)


def test_server_sends_the_workers_gauge(start_server, udp: Listener) -> None:
    server = start_server("basic:app", "--statsd-host", udp.address, workers=2)
    assert udp.wait_line("gunicorn.workers:") == "gunicorn.workers:2|g"
    server.signal(signal.SIGTTIN)
    udp.wait_lines(lambda lines: "gunicorn.workers:3|g" in lines, "the gauge at 3")
