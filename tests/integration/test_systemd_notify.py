"""sd_notify as systemd sees it: a real prefork with NOTIFY_SOCKET pointing at a datagram
socket this test owns, and socket activation through systemd's own test tool."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from conftest import APPS, base_env, free_port, stop_orphan, wait_for

NOTIFY_TIMEOUT = 20.0


class NotifyListener:
    """The service manager's end: collects every datagram, each as a {KEY: VALUE} dict, and,
    as systemd does (SO_PASSCRED), the pid of the process that sent it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []
        self.senders: list[int] = []  # senders[i] sent messages[i]

    def expect(self, predicate: Callable[[dict[str, str]], bool], timeout: float = NOTIFY_TIMEOUT,
               what: str = "message") -> dict[str, str]:
        """The first message, received from now on, that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout}s; got {self.messages}")
            self.sock.settimeout(remaining)
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(CREDENTIALS.size))
            except TimeoutError:
                continue
            message = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.messages.append(message)
            self.senders.append(_sender(ancillary))
            if predicate(message):
                return message

    def drain(self) -> None:
        """Collect what has arrived so far without waiting."""
        try:
            self.expect(lambda m: False, timeout=0.2, what="")
        except AssertionError:
            pass

    def close(self) -> None:
        self.sock.close()


#: struct ucred: pid, uid, gid.
CREDENTIALS = struct.Struct("iII")


def _sender(ancillary: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return CREDENTIALS.unpack(data[:CREDENTIALS.size])[0]
    return 0


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_ready_reloading_ready_stopping(start_server, notify):
    server = start_server("basic:app", workers=2, env={"NOTIFY_SOCKET": str(notify.path)})
    ready = notify.expect(lambda m: m.get("READY") == "1", what="READY=1")
    assert re.fullmatch(r"[12] worker\(s\) ready, generation 1", ready["STATUS"])  # serving from the first

    before = monotonic_usec()
    server.signal(signal.SIGHUP)
    reloading = notify.expect(lambda m: "RELOADING" in m, what="RELOADING=1")
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
    ready = notify.expect(lambda m: m.get("READY") == "1", what="READY=1 after the reload")
    assert "generation 2" in ready["STATUS"]
    assert server.get("/").status_code == 200

    server.signal(signal.SIGTERM)
    notify.expect(lambda m: m.get("STOPPING") == "1", what="STOPPING=1")
    assert server.wait_exit() == 0


def test_after_a_usr2_hand_over_the_old_arbiter_says_nothing_more(start_server, notify):
    """With NotifyAccess=all systemd reads every process of the unit: a STOPPING=1 from the old
    arbiter after MAINPID moved would be taken as the service stopping (and its cgroup, the new
    arbiter included, killed at the stop timeout)."""
    server = start_server("basic:app", workers=2, env={"NOTIFY_SOCKET": str(notify.path)})
    notify.expect(lambda m: m.get("READY") == "1", what="READY=1")
    server.signal(signal.SIGUSR2)
    handed_over = notify.expect(lambda m: "MAINPID" in m, what="MAINPID= from the new arbiter")
    new_pid = int(handed_over["MAINPID"])
    try:
        assert notify.senders[-1] == new_pid != server.pid
        assert server.wait_exit(timeout=30) == 0
        notify.drain()
        after = notify.messages.index(handed_over)
        from_old = [m for m, pid in zip(notify.messages[after:], notify.senders[after:]) if pid == server.pid]
        assert from_old == []
        assert requests.get(server.url, timeout=10).status_code == 200
    finally:
        stop_orphan(new_pid)
    notify.expect(lambda m: m.get("STOPPING") == "1", what="STOPPING=1 from the new arbiter")
    assert notify.senders[-1] == new_pid


def test_watchdog_is_pinged_at_half_the_interval_even_below_the_tick(start_server, notify):
    """WatchdogSec=0.4s: systemd wants WATCHDOG=1 every 0.2 s, faster than the arbiter's 1 s
    tick; missing them would get a healthy service killed."""
    start_server("basic:app", workers=1,
                 env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})
    notify.expect(lambda m: m.get("WATCHDOG") == "1", what="a first WATCHDOG=1")
    start = time.monotonic()
    for _ in range(5):
        notify.expect(lambda m: m.get("WATCHDOG") == "1", timeout=1.0, what="the next WATCHDOG=1")
    assert time.monotonic() - start < 1.8  # 5 pings at ~0.2 s, with room for a busy machine


def test_status_line_reports_requests_served(start_server, notify):
    server = start_server("basic:app", workers=1, env={"NOTIFY_SOCKET": str(notify.path)})
    for _ in range(3):
        assert server.get("/").status_code == 200
    served = server.get("/pid")  # one more, so the count is at least the fixture's probe + 4
    assert served.status_code == 200
    message = notify.expect(
        lambda m: set(m) == {"STATUS"} and _served(m["STATUS"]) >= 5,
        what="a periodic STATUS= with the requests")
    assert message["STATUS"].startswith("1 worker(s) ready, generation 1, ")


def _served(status: str) -> int:
    words = status.rsplit(", ", 1)[-1].split()
    return int(words[0]) if words[1:] == ["requests", "served"] else -1


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed")
def test_socket_activation_serves_http(notify, tmp_path):
    port = free_port()
    log_path = tmp_path / "prefork.log"
    command = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "-E", f"NOTIFY_SOCKET={notify.path}",
               sys.executable, "-m", "prefork.server", "-w", "2", "basic:app"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=APPS, env=base_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        # systemd-socket-activate listens first and execs prefork at the first connection,
        # which then waits in the backlog until a worker accepts it.
        wait_for(lambda: _connectable(port), 10, message="the activation socket")
        response = requests.get(f"http://127.0.0.1:{port}/", timeout=NOTIFY_TIMEOUT)
        assert response.status_code == 200 and response.text == "Hello, world!\n"
        notify.expect(lambda m: m.get("READY") == "1", what="READY=1")
        assert f"Listening at: http://127.0.0.1:{port} ({proc.pid})" in log_path.read_text()
        proc.send_signal(signal.SIGTERM)
        notify.expect(lambda m: m.get("STOPPING") == "1", what="STOPPING=1")
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_named_activated_sockets_are_matched_to_fd_binds(tmp_path):
    """Two sockets from systemd, named like FileDescriptorName=: `-b fd://public` finds its
    socket by name; a name systemd did not pass is a one-line error, not a guess."""
    public, admin = free_port(), free_port()
    log_path = tmp_path / "prefork.log"
    command = ["systemd-socket-activate", "-l", f"127.0.0.1:{public}", "-l", f"127.0.0.1:{admin}",
               "--fdname=public:admin", sys.executable, "-m", "prefork.server", "-w", "1",
               "-b", "fd://public", "-b", "fd://admin", "basic:app"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=APPS, env=base_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _connectable(public), 10, message="the activation sockets")
        for port in (public, admin):
            assert requests.get(f"http://127.0.0.1:{port}/", timeout=NOTIFY_TIMEOUT).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    port = free_port()
    command = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=public",
               sys.executable, "-m", "prefork.server", "-b", "fd://private", "basic:app"]
    proc = subprocess.Popen(command, cwd=APPS, env=base_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _connectable(port), 10, message="the activation socket")
        output, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 1
    assert "--bind fd://private: no socket named 'private' was passed (names passed: public;" in output


def _connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
