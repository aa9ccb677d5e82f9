"""Fixtures that run the real ``prefork`` command on a socket the test bound itself.

The test binds 127.0.0.1:0, keeps the listener, and hands its fd to prefork in ``PREFORK_FD``
(the same hand-over a re-exec uses), so there is no port race and connections queue in the
backlog from the first instant. Every wait is a bounded wait for a condition.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests

TESTS = Path(__file__).resolve().parent
APPS = TESTS / "apps"
START_TIMEOUT = 20.0


def wait_for(condition: Callable[[], object], timeout: float, interval: float = 0.02,
             message: str = "condition") -> object:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@dataclass
class Server:
    proc: subprocess.Popen
    port: int | None
    log_path: Path
    listener: socket.socket | None = None
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[psutil.Process]:
        try:
            return [child for child in psutil.Process(self.proc.pid).children()
                    if child.status() != psutil.STATUS_ZOMBIE]
        except psutil.NoSuchProcess:
            return []

    def worker_pids(self) -> set[int]:
        return {child.pid for child in self.workers()}

    def wait_workers(self, count: int, timeout: float = START_TIMEOUT) -> set[int]:
        wait_for(lambda: len(self.worker_pids()) == count, timeout, message=f"{count} workers")
        return self.worker_pids()

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        wait_for(lambda: text in self.log(), timeout, message=f"log line {text!r}")

    def get(self, path: str = "/", **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return requests.get(self.url + path, **kwargs)

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                for child in self.workers():
                    child.kill()
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.listener is not None:
            self.listener.close()


def prefork_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefork.server", *args]


def base_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PREFORK_", "LISTEN_", "NOTIFY_SOCKET", "WEB_CONCURRENCY", "PORT"))}
    env.update(extra)
    return env


def bound_listener() -> socket.socket:
    """A listening loopback socket on a free port, inheritable for a child to adopt."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.set_inheritable(True)
    return listener


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = bound_listener()
    yield sock
    sock.close()


def launch(command: list[str], log_path: Path, env: dict[str, str], fd_variable: str = "PREFORK_FD",
           probe: str = "/", cwd: Path = APPS) -> Server:
    """Start any server command on a socket bound here and handed over in ``fd_variable``
    (PREFORK_FD for prefork, WERKZEUG_SERVER_FD for Werkzeug), for module-scoped servers;
    waits until ``probe`` answers 200. The caller stops it."""
    listener = bound_listener()
    full_env = base_env(**env, **{fd_variable: str(listener.fileno())})
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(command, cwd=cwd, env=full_env, pass_fds=(listener.fileno(),),
                                stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(proc, listener.getsockname()[1], log_path, listener)
    try:
        wait_for(lambda: _answers(server, probe), START_TIMEOUT, message=f"{command} to answer")
    except BaseException:
        server.stop()
        raise
    return server


def stop_orphan(pid: int) -> None:
    """Stop a process the test has no handle on (a USR2 successor arbiter) and wait for it."""
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
             15, message=f"process {pid} to exit")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``start_server("basic:app", "-w", "2")``: prefork on a pre-bound loopback socket,
    started in tests/apps, stderr captured to a file; waits until ``ready_workers`` run and
    the app answers. Stopped (and its workers gone) at teardown."""
    servers: list[Server] = []

    def start(app: str = "basic:app", *args: str, workers: int = 2, env: dict | None = None,
              bind: bool = True, wait: bool = True, cwd: Path = APPS, probe: str = "/") -> Server:
        listener = None
        pass_fds: tuple[int, ...] = ()
        extra_env = dict(env or {})
        if bind:
            listener = bound_listener()
            pass_fds = (listener.fileno(),)
            extra_env["PREFORK_FD"] = str(listener.fileno())
        log_path = tmp_path / f"prefork-{len(servers)}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(prefork_command("-w", str(workers), *args, app), cwd=cwd,
                                    env=base_env(**extra_env), pass_fds=pass_fds,
                                    stdout=log_file, stderr=subprocess.STDOUT)
        server = Server(proc, listener.getsockname()[1] if listener else None, log_path, listener)
        servers.append(server)
        if wait:
            server.wait_workers(workers)
            if bind and probe:
                wait_for(lambda: _answers(server, probe), START_TIMEOUT, message="first response")
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def in_process() -> Iterator[Callable[..., object]]:
    """``in_process("wsgi_cases:app", "--no-request-buffering")``: a prefork worker built in
    this process (tests/inprocess.py), driven over socketpairs without a loop or a fork.
    ``server.request(raw).responses(n)``; ``server.log()`` is its error log."""
    from inprocess import InProcessServer

    servers: list[InProcessServer] = []

    def start(app: str = "basic:app", *args: str) -> InProcessServer:
        servers.append(InProcessServer(app, *args))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _answers(server: Server, path: str) -> bool:
    """True once ``path`` answers without a server error; fails the test at once if the
    server process died."""
    if server.proc.poll() is not None:
        raise AssertionError(f"{server.proc.args} exited with {server.proc.returncode}:\n{server.log()}")
    try:
        return server.get(path, timeout=2).status_code < 500
    except requests.RequestException:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# The load driver shared with scripts/chaos.py.
sys.path.insert(0, str(TESTS.parent / "scripts"))
