"""sd_notify and socket activation (prefork.server.notify) against real sockets and processes.

A datagram socket owned by the test stands in for systemd's NOTIFY_SOCKET; socket activation
runs in child processes whose fds 3 and 4 are real listening sockets, because rearranging
pytest's own fds 3.. would break pytest.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from prefork.server.notify import MAX_DATAGRAM, Notifier, listen_fds, successor_environ

RECV_TIMEOUT = 10.0  # seconds; generous, the machine is shared
CHILD_TIMEOUT = 60.0
QUEUE_FILL_LIMIT = 100_000  # sends before we give up on seeing EAGAIN


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """(receiving socket, the NOTIFY_SOCKET value that reaches it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(RECV_TIMEOUT)
    if request.param == "path":
        value = str(tmp_path / "notify")
        sock.bind(value)
    else:
        name = f"prefork-test-{uuid.uuid4().hex}"
        value = "@" + name
        sock.bind("\0" + name)
    with sock:
        yield sock, value


def receive(sock: socket.socket) -> str:
    return sock.recv(65536).decode("utf-8")


MESSAGES: list[tuple[str, Callable[[Notifier], bool], str]] = [
    ("ready", lambda n: n.ready(), "READY=1"),
    ("ready with status", lambda n: n.ready("serving, 4 workers"), "READY=1\nSTATUS=serving, 4 workers"),
    ("stopping", lambda n: n.stopping(), "STOPPING=1"),
    ("status", lambda n: n.status("reload failed: bad config"), "STATUS=reload failed: bad config"),
    ("status is one line", lambda n: n.status("two\nlines\r\nand a \0"), "STATUS=two lines and a  "),
    ("status not utf-8 encodable", lambda n: n.status("bad \udcff byte"), "STATUS=bad ? byte"),
    ("mainpid", lambda n: n.mainpid(4711), "MAINPID=4711"),
    ("watchdog", lambda n: n.watchdog(), "WATCHDOG=1"),
]


@pytest.mark.parametrize(("send", "expected"), [m[1:] for m in MESSAGES], ids=[m[0] for m in MESSAGES])
def test_sends_exact_datagram(notify_socket: tuple[socket.socket, str], send: Callable[[Notifier], bool],
                              expected: str) -> None:
    sock, value = notify_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": value})
    assert notifier.enabled
    assert send(notifier) is True
    assert receive(sock) == expected


def test_reloading_carries_monotonic_usec(notify_socket: tuple[socket.socket, str]) -> None:
    sock, value = notify_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": value})
    before = time.monotonic_ns() // 1000
    assert notifier.reloading() is True
    after = time.monotonic_ns() // 1000
    first, second = receive(sock).split("\n")
    assert first == "RELOADING=1"
    key, usec = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after


def test_long_status_is_cut_to_one_datagram_on_a_character_boundary(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(RECV_TIMEOUT)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert notifier.ready("é" * MAX_DATAGRAM) is True
        data = sock.recv(65536)
    assert MAX_DATAGRAM - 1 <= len(data) <= MAX_DATAGRAM
    text = data.decode("utf-8")  # raises if a character was cut in half
    assert text.startswith("READY=1\nSTATUS=éé")


@pytest.mark.parametrize("value", ["", "relative/notify", "vsock:2:1234", "@"])
def test_no_usable_notify_socket_disables(value: str) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": value} if value else {})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False


def test_missing_socket_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "absent")})
    assert notifier.enabled
    assert notifier.ready() is False
    assert notifier.last_error is not None and notifier.last_error.errno == errno.ENOENT


def test_closed_socket_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path)})  # the file stays, nobody listens
    assert notifier.stopping() is False
    assert notifier.last_error is not None and notifier.last_error.errno == errno.ECONNREFUSED


@pytest.mark.timeout(30)  # a blocking send would hang here rather than fail
def test_full_queue_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))  # never read: the queue fills up
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path)})
        for _ in range(QUEUE_FILL_LIMIT):
            if not notifier.watchdog():
                break
        else:
            pytest.fail(f"{QUEUE_FILL_LIMIT} datagrams queued and none refused")
        assert notifier.last_error is not None and notifier.last_error.errno == errno.EAGAIN
        sock.settimeout(RECV_TIMEOUT)
        assert sock.recv(64) == b"WATCHDOG=1"  # what was accepted did arrive


OWN, OTHER = "own pid", "other pid"
WATCHDOG_CASES = [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": OWN}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": OTHER}, None),
    ({"WATCHDOG_USEC": "500000"}, 0.25),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "30s"}, None),
    ({"WATCHDOG_USEC": "²"}, None),
    ({"WATCHDOG_PID": OWN}, None),
]


@pytest.mark.parametrize(("environ", "expected"), WATCHDOG_CASES)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    pids = {OWN: str(os.getpid()), OTHER: str(os.getppid())}
    environ = {key: pids.get(value, value) for key, value in environ.items()}
    assert Notifier.from_environ(environ).watchdog_interval() == expected


def test_successor_environ_repoints_watchdog_and_keeps_notify_socket() -> None:
    environ = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "100"}
    successor = successor_environ(environ, 200)
    assert successor == {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "200"}
    assert environ["WATCHDOG_PID"] == "100"
    assert "WATCHDOG_PID" not in successor_environ({"NOTIFY_SOCKET": "/x"}, 200)


# The "old arbiter's" forked child: builds the successor's environment for its own pid and
# execs the "new arbiter", which takes over as systemd's main process.
HANDOFF_CHILD = textwrap.dedent(
    """
    import os, sys
    from prefork.server.notify import successor_environ
    NEW_ARBITER = '''
    import os
    from prefork.server.notify import Notifier
    notifier = Notifier.from_environ()
    assert notifier.watchdog_interval() == 15.0, notifier.watchdog_interval()
    assert notifier.mainpid(os.getpid()) and notifier.ready("upgraded") and notifier.watchdog()
    print(os.getpid())
    '''
    env = successor_environ(os.environ, os.getpid())
    os.execve(sys.executable, [sys.executable, "-c", NEW_ARBITER], env)
    """
)


def test_reexeced_arbiter_takes_over_notification(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(RECV_TIMEOUT)
        # The watchdog is meant for us, the "old arbiter".
        env = dict(os.environ, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="30000000",
                   WATCHDOG_PID=str(os.getpid()))
        child = subprocess.run([sys.executable, "-c", HANDOFF_CHILD], env=env, capture_output=True, text=True,
                               timeout=CHILD_TIMEOUT)
        assert child.returncode == 0, child.stderr
        new_pid = int(child.stdout)
        received = [receive(sock) for _ in range(3)]
        assert received == [f"MAINPID={new_pid}", "READY=1\nSTATUS=upgraded", "WATCHDOG=1"]


SELF, ELSEWHERE = -1, -2
LISTEN_CASES = [
    ({"LISTEN_PID": SELF, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:ctl"}, [(3, "http"), (4, "ctl")]),
    ({"LISTEN_PID": SELF, "LISTEN_FDS": "2"}, [(3, None), (4, None)]),
    ({"LISTEN_PID": SELF, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "prefork.socket"}, [(3, "prefork.socket")]),
    ({"LISTEN_PID": SELF, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http"}, [(3, None), (4, None)]),
    ({"LISTEN_PID": SELF, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:"}, [(3, "http"), (4, None)]),
    ({"LISTEN_PID": ELSEWHERE, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:ctl"}, []),
    ({"LISTEN_FDS": "2"}, []),
    ({"LISTEN_PID": SELF, "LISTEN_FDS": "0"}, []),
    ({"LISTEN_PID": SELF, "LISTEN_FDS": "two"}, []),
    ({"LISTEN_PID": SELF}, []),
    ({}, []),
]


@pytest.mark.parametrize(("environ", "expected"), LISTEN_CASES)
def test_listen_fds_reads_and_clears_environment(environ: dict[str, object],
                                                 expected: list[tuple[int, str | None]]) -> None:
    pids = {SELF: "4242", ELSEWHERE: "4243"}
    env = {key: pids.get(value, value) for key, value in environ.items()} | {"PATH": "/bin"}
    assert listen_fds(env, pid=4242) == expected
    assert env == {"PATH": "/bin"}


# Runs inside the activated process: what listen_fds() found, what the fds really are, and
# whether a child of ours would still see the variables.
PROBE = textwrap.dedent(
    """
    import json, os, socket
    from prefork.server.notify import listen_fds
    found = []
    for fd, name in listen_fds():
        sock = socket.socket(fileno=fd)
        found.append([fd, name, sock.family.name, sock.type.name, sock.getsockname()])
        sock.detach()
    leftover = sorted(key for key in os.environ if key.startswith("LISTEN_"))
    print(json.dumps({"fds": found, "leftover": leftover}))
    """
)

# Stands in for systemd: moves the inherited sockets to fds 3 and 4, sets LISTEN_PID to its own
# pid (which exec keeps) and execs the probe.
ACTIVATOR = textwrap.dedent(
    """
    import fcntl, os, sys
    sources = [int(fd) for fd in os.environ.pop("SOURCE_FDS").split(",")]
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in sources]  # out of the way of 3, 4
    for target, fd in enumerate(parked, start=3):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(parked)), LISTEN_FDNAMES="http:ctl")
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[1]])
    """
)


def test_listen_fds_adopts_real_sockets_from_activator(tmp_path: Path) -> None:
    unix_path = str(tmp_path / "http.sock")
    with socket.create_server(("127.0.0.1", 0)) as tcp, socket.socket(socket.AF_UNIX) as unix:
        unix.bind(unix_path)
        unix.listen()
        env = dict(os.environ, SOURCE_FDS=f"{tcp.fileno()},{unix.fileno()}")
        child = subprocess.run(
            [sys.executable, "-c", ACTIVATOR, PROBE],
            env=env,
            pass_fds=(tcp.fileno(), unix.fileno()),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
        )
        assert child.returncode == 0, child.stderr
        report = json.loads(child.stdout)
        assert report["fds"] == [
            [3, "http", "AF_INET", "SOCK_STREAM", list(tcp.getsockname())],
            [4, "ctl", "AF_UNIX", "SOCK_STREAM", unix_path],
        ]
        assert report["leftover"] == []


def read_lines(fd: int, count: int, deadline: float) -> list[str]:
    """The first ``count`` lines from a child's unbuffered pipe; fails the test at the deadline."""
    data = b""
    while data.count(b"\n") < count:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            pytest.fail(f"expected {count} lines from the child in time, got {data!r}")
        data += chunk
    return data.decode().splitlines()[:count]


def test_listen_fds_under_systemd_socket_activate(tmp_path: Path) -> None:
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate not installed (apt package `systemd`)")
    first, second = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    proc = subprocess.Popen(
        [tool, "-l", first, "-l", second, "--fdname=http:ctl", sys.executable, "-c", PROBE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    try:
        # "Listening on <path> as <fd>." for each socket, then it waits for a first connection.
        listening = read_lines(proc.stderr.fileno(), 2, time.monotonic() + CHILD_TIMEOUT)
        assert all(line.startswith("Listening on") for line in listening), listening
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(first)  # triggers the activation
            stdout, stderr = proc.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=CHILD_TIMEOUT)
    assert proc.returncode == 0, stderr.decode()
    report = json.loads(stdout)
    assert report["fds"] == [
        [3, "http", "AF_UNIX", "SOCK_STREAM", first],
        [4, "ctl", "AF_UNIX", "SOCK_STREAM", second],
    ]
    assert report["leftover"] == []
