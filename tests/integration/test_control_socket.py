"""The control socket, as an operator uses it: `prefork status`, `prefork ctl`, and what a
careless or hostile client gets when it sends garbage (an error line; the arbiter serves on)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from conftest import APPS, free_port, prefork_command, stop_orphan, wait_for
from prefork.server.control import MAX_LINE, fallback_path, remove_stale_fallbacks, socket_path
from prefork.server.ctl import CtlError, locate

CLI_TIMEOUT = 30


def prefork(*args: str, cwd: Path = APPS) -> subprocess.CompletedProcess:
    return subprocess.run(prefork_command(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT)


def status(path: Path) -> dict:
    result = prefork("status", "--json", "--control-socket", str(path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def controlled(start_server, tmp_path):
    """``controlled(workers=2, *args)``: a server with its control socket at a known path."""
    def start(*args: str, workers: int = 2):
        path = tmp_path / "ctl.sock"
        server = start_server("basic:app", "--control-socket", str(path), *args, workers=workers)
        wait_for(path.exists, 10, message="control socket")
        return server, path
    return start


def exchange_raw(path: Path, payload: bytes, timeout: float = 10.0) -> list[bytes]:
    """Send ``payload``, half-close, and return every line the server sent before closing."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.splitlines()


# -- status ------------------------------------------------------------------------------------

def test_status_json_lists_every_worker_with_plausible_fields(controlled):
    server, path = controlled(workers=3)
    # the fixture's probe, once its worker has published its counters (once a second)
    before = wait_for(lambda: sum(w["requests"] for w in status(path)["workers"]), 10,
                      message="the start-up probe counted")
    for _ in range(5):
        assert server.get("/").status_code == 200

    def counted() -> dict | None:
        data = status(path)
        return data if sum(w["requests"] for w in data["workers"]) == before + 5 else None

    data = wait_for(counted, 10, message="5 more requests counted")
    assert data["ok"] is True
    assert data["pid"] == server.pid
    assert data["generation"] == 1 and data["reloading"] is None and data["stopping"] is False
    assert data["workers_wanted"] == 3
    assert 0 < data["uptime"] < 120
    assert {w["pid"] for w in data["workers"]} == server.worker_pids()
    assert sorted(w["number"] for w in data["workers"]) == [1, 2, 3]
    for worker in data["workers"]:
        assert psutil.Process(worker["pid"]).ppid() == server.pid
        assert worker["generation"] == 1
        assert worker["state"] == "ready"
        assert worker["request_age"] is None
        assert worker["retire_cause"] is None
        assert worker["connections"] == {"head": 0, "body": 0, "write": 0, "idle": 0, "closing": 0}
        assert worker["buffered"] == 0
        assert 1 << 20 < worker["rss"] < 1 << 30
        assert 0.0 <= worker["cpu_percent"] <= 200.0
        assert 0 < worker["age"] < data["uptime"] + 1


def test_status_table_shows_one_row_per_worker(controlled):
    server, path = controlled(workers=2)
    result = prefork("status", "--control-socket", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"arbiter {server.pid} [basic:app]")
    assert "generation 1" in lines[0] and "2 worker(s), 2 wanted" in lines[0]
    assert lines[1].split() == ["PID", "#", "GEN", "STATE", "REQUESTS", "IN", "REQUEST", "H/B/W/IDLE/CL",
                                "BUFFERED", "RSS", "CPU%", "AGE"]
    rows = {int(line.split()[0]): line.split() for line in lines[2:]}
    assert set(rows) == server.worker_pids()
    for cells in rows.values():
        assert cells[2] == "1" and cells[3] == "ready" and cells[5] == "-"
        assert cells[6] == "0/0/0/0/0" and cells[7] == "0.0M" and cells[8].endswith("M")


def test_status_shows_a_request_in_flight(controlled):
    server, path = controlled(workers=1)
    thread = threading.Thread(target=lambda: server.get("/sleep?2"))
    thread.start()
    try:
        busy = wait_for(lambda: [w for w in status(path)["workers"] if w["state"] == "busy"], 10,
                        message="a busy worker")
        assert 0 <= busy[0]["request_age"] < 5
    finally:
        thread.join(timeout=10)


# -- ctl ---------------------------------------------------------------------------------------

def test_ctl_workers_adds_and_removes_workers(controlled):
    server, path = controlled(workers=2)
    result = prefork("ctl", "workers", "+1", "--control-socket", str(path))
    assert result.returncode == 0, result.stderr
    assert "TTIN" in result.stdout
    server.wait_workers(3)
    assert status(path)["workers_wanted"] == 3
    result = prefork("ctl", "workers", "-2", "--control-socket", str(path))
    assert result.returncode == 0, result.stderr
    server.wait_workers(1)
    assert server.get("/").status_code == 200


def test_ctl_reload_replaces_every_worker_without_failing_a_request(controlled):
    server, path = controlled(workers=2)
    before = server.worker_pids()
    failures: list[str] = []
    done = threading.Event()

    def hammer() -> None:
        session = requests.Session()
        for _ in range(2000):  # bounded; stopped by `done` long before
            if done.is_set():
                return
            try:
                if session.get(server.url + "/", timeout=10).status_code != 200:
                    failures.append("status")
            except requests.RequestException as exc:
                failures.append(repr(exc))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        result = prefork("ctl", "reload", "--control-socket", str(path))
        assert result.returncode == 0, result.stderr
        wait_for(lambda: status(path)["generation"] == 2, 20, message="generation 2")
        after = server.wait_workers(2)
    finally:
        done.set()
        thread.join(timeout=30)
    assert not after & before
    assert failures == []


def test_ctl_stop_stops_the_server_gracefully(controlled):
    server, path = controlled(workers=2)
    result = prefork("ctl", "stop", "--control-socket", str(path))
    assert result.returncode == 0, result.stderr
    assert server.wait_exit() == 0
    assert not path.exists()


def test_ctl_workers_needs_a_signed_change(controlled):
    server, path = controlled(workers=1)
    result = prefork("ctl", "workers", "3", "--control-socket", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("prefork: error: ctl workers: expected a change")
    assert len(server.worker_pids()) == 1


# -- what a bad client gets ----------------------------------------------------------------------

MALFORMED = [
    (b"hello\n", "not valid JSON"),
    (b"\xff\xfe\x00garbage\n", "not valid JSON"),
    (b"[1, 2]\n", "expected a JSON object"),
    (b'"status"\n', "expected a JSON object"),
    (b"{}\n", 'missing "cmd"'),
    (b'{"cmd": 7}\n', 'missing "cmd"'),
    (b'{"cmd": "explode"}\n', "unknown command 'explode'"),
    (b'{"cmd": "status", "verbose": true}\n', "unexpected field 'verbose'"),
    (b'{"cmd": "workers"}\n', '"delta" must be'),
    (b'{"cmd": "workers", "delta": "2"}\n', '"delta" must be'),
    (b'{"cmd": "workers", "delta": true}\n', '"delta" must be'),
    (b'{"cmd": "workers", "delta": 1.5}\n', '"delta" must be'),
    (b'{"cmd": "workers", "delta": 0}\n', '"delta" must be'),
    (b'{"cmd": "workers", "delta": 1000000}\n', '"delta" must be'),
    (b"[" * 50_000 + b"\n", "not valid JSON"),  # nesting deep enough to hit the recursion limit
    (b'{"cmd": "status", "x": ' + b"1" * 5000 + b"}\n", "not valid JSON"),  # int too long to parse
]


def test_malformed_requests_get_an_error_line_and_change_nothing(controlled):
    server, path = controlled(workers=1)
    for payload, error in MALFORMED:
        lines = exchange_raw(path, payload)
        assert len(lines) == 1, payload[:40]
        answer = json.loads(lines[0])
        assert answer["ok"] is False and error in answer["error"], (payload[:40], answer)
    assert status(path)["workers_wanted"] == 1
    assert server.worker_pids() == server.wait_workers(1)
    assert server.get("/").status_code == 200
    assert "Traceback" not in server.log()


def test_over_long_line_is_refused_and_the_connection_closed(controlled):
    server, path = controlled(workers=1)
    lines = exchange_raw(path, b'{"cmd": "status", "pad": "' + b"x" * (MAX_LINE + 10))
    assert [json.loads(line) for line in lines] == [
        {"ok": False, "error": f"request line longer than {MAX_LINE} bytes"}]
    assert status(path)["ok"] is True
    assert server.get("/").status_code == 200


def test_several_requests_on_one_connection_are_answered_in_order(controlled):
    server, path = controlled(workers=1)
    lines = exchange_raw(path, b'{"cmd": "status"}\nnope\n\n{"cmd": "status"}')  # last one without \n
    answers = [json.loads(line) for line in lines]
    assert [a["ok"] for a in answers] == [True, False, True]
    assert answers[0]["pid"] == server.pid


def test_idle_and_silent_clients_do_not_block_the_arbiter(controlled):
    server, path = controlled(workers=1)
    idle = []
    try:
        for _ in range(40):  # more than MAX_CLIENTS: the surplus is closed at once
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            idle.append(sock)
            wait_for(lambda: sock.connect_ex(str(path)) == 0, 10, message="a place in the backlog")
            try:
                sock.sendall(b'{"cmd": "sta')  # never finished
            except OSError:
                pass  # one of the surplus, already closed
        start = time.monotonic()
        server.signal(signal.SIGTTIN)
        server.wait_workers(2, timeout=10)
        assert server.get("/").status_code == 200
        assert time.monotonic() - start < 5
        assert idle[0].recv(100) == b""  # dropped at its deadline
    finally:
        for sock in idle:
            sock.close()
    assert status(path)["workers_wanted"] == 2


def test_a_client_that_never_reads_cannot_swamp_the_arbiter(controlled):
    server, path = controlled(workers=1)
    arbiter = psutil.Process(server.pid)
    rss_before = arbiter.memory_info().rss
    chunk = b"{}\n" * 20_000  # each line earns a ~50-byte error answer
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as flood:
        flood.connect(str(path))
        flood.settimeout(0.5)
        deadline = time.monotonic() + 3
        sent = 0
        while time.monotonic() < deadline:
            try:
                sent += flood.send(chunk)
            except TimeoutError:
                break  # the arbiter stopped reading us: what we wanted
        assert time.monotonic() < deadline, f"the arbiter kept reading ({sent} bytes)"
        assert status(path)["ok"] is True  # others are still served
        assert arbiter.memory_info().rss - rss_before < 32 << 20
    assert server.get("/").status_code == 200


# -- the socket file ----------------------------------------------------------------------------

def test_socket_file_is_private_and_removed_on_exit(controlled):
    server, path = controlled(workers=1)
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not path.exists()


def test_default_socket_is_per_pid_in_tmp(start_server):
    server = start_server("basic:app", workers=1)
    path = Path(fallback_path(server.pid))
    wait_for(path.exists, 10, message=str(path))
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert status(path)["pid"] == server.pid
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not path.exists()


def test_default_socket_follows_the_pidfile(start_server, tmp_path):
    pidfile = tmp_path / "app.pid"
    server = start_server("basic:app", "--pid", str(pidfile), workers=1)
    path = Path(str(pidfile) + ".ctl")
    wait_for(path.exists, 10, message=str(path))
    result = prefork("status", "--json", "--pid", str(pidfile))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pid"] == server.pid
    assert not Path(fallback_path(server.pid)).exists()


def test_default_socket_goes_to_the_systemd_runtime_directory(start_server, tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir()
    server = start_server("basic:app", "--pid", str(tmp_path / "app.pid"), workers=1,
                          env={"RUNTIME_DIRECTORY": str(runtime)})
    path = runtime / "control.sock"
    wait_for(path.exists, 10, message=str(path))
    assert status(path)["pid"] == server.pid
    # `prefork ctl` run by systemd (ExecReload=) finds it the same way
    result = subprocess.run(prefork_command("ctl", "reload"), cwd=APPS, capture_output=True, text=True,
                            timeout=CLI_TIMEOUT, env={**os.environ, "RUNTIME_DIRECTORY": str(runtime)})
    assert result.returncode == 0, result.stderr
    wait_for(lambda: status(path)["generation"] == 2, 20, message="generation 2")


def test_off_disables_the_socket(start_server):
    server = start_server("basic:app", "--control-socket", "off", workers=1)
    assert not Path(fallback_path(server.pid)).exists()
    assert "Control socket at" not in server.log()


SOCKET_PATHS = [
    # (setting, environ, pidfile, expected)
    ("off", {"RUNTIME_DIRECTORY": "/run/x"}, "/run/x/p.pid", None),
    ("/srv/ctl.sock", {"RUNTIME_DIRECTORY": "/run/x"}, "/run/p.pid", "/srv/ctl.sock"),
    ("auto", {"RUNTIME_DIRECTORY": "/run/app"}, "/var/p.pid", "/run/app/control.sock"),
    ("auto", {"RUNTIME_DIRECTORY": "/run/a:/run/b"}, None, "/run/a/control.sock"),
    ("auto", {}, "/var/run/app.pid", "/var/run/app.pid.ctl"),
    ("auto", {"RUNTIME_DIRECTORY": ""}, None, "/tmp/prefork-4242.ctl"),
]


@pytest.mark.parametrize("setting, environ, pidfile, expected", SOCKET_PATHS)
def test_socket_path_rules(setting, environ, pidfile, expected):
    assert socket_path(setting, environ, pidfile, 4242) == expected


def test_relative_socket_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert socket_path("ctl.sock", {}, None, 1) == str(tmp_path / "ctl.sock")
    assert socket_path("auto", {}, "app.pid", 1) == str(tmp_path / "app.pid.ctl")


# -- the client's errors and how it finds a server -----------------------------------------------

def _socket_file(path: Path, listen: bool) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    if listen:
        sock.listen(1)
    return sock


def test_client_errors_are_one_line_and_nonzero(tmp_path):
    missing = prefork("status", "--control-socket", str(tmp_path / "none.sock"))
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"prefork: error: no control socket at {tmp_path / 'none.sock'} "
        "(is prefork running, without --control-socket off?)"]

    stale = tmp_path / "stale.sock"
    _socket_file(stale, listen=False).close()  # what a SIGKILLed arbiter leaves behind
    gone = prefork("ctl", "reload", "--control-socket", str(stale))
    assert gone.returncode == 1
    assert len(gone.stderr.splitlines()) == 1 and "the arbiter is gone" in gone.stderr

    mute = tmp_path / "mute.sock"
    with _socket_file(mute, listen=True) as listener:
        def accept_and_hang_up() -> None:
            conn, _ = listener.accept()
            conn.recv(100)
            conn.close()
        thread = threading.Thread(target=accept_and_hang_up)
        thread.start()
        hung_up = prefork("status", "--control-socket", str(mute))
        thread.join(timeout=10)
    assert hung_up.returncode == 1
    assert len(hung_up.stderr.splitlines()) == 1 and "without answering" in hung_up.stderr

    result = prefork("status", "--pid", str(tmp_path / "none.pid"))
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "no control socket for" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="drops privileges to simulate another user")
def test_client_reports_permission_denied(controlled):
    server, path = controlled(workers=1)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # another user: the 0600 socket must refuse us
        try:
            os.setgid(65534)
            os.setuid(65534)
            from prefork.server.ctl import ask
            try:
                ask(str(path), {"cmd": "status"})
                os.write(write_end, b"connected")
            except CtlError as exc:
                os.write(write_end, str(exc).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as f:
        message = f.read().decode()
    assert message.startswith(f"permission denied on {path}")


def test_stale_fallback_sockets_of_dead_arbiters_are_swept(tmp_path):
    """An arbiter killed with -9 leaves /tmp/prefork-PID.ctl behind; the next one removes such
    leftovers, and only those: live arbiters' sockets and other files stay."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead, live = Path(fallback_path(gone.pid, str(tmp_path))), Path(fallback_path(os.getpid(), str(tmp_path)))
    for path in (dead, live):
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    not_a_socket = tmp_path / f"prefork-{gone.pid + 1}.ctl"
    not_a_socket.write_text("keep me")
    assert remove_stale_fallbacks(str(tmp_path)) == 1
    assert not dead.exists() and live.exists() and not_a_socket.exists()


def test_locate_finds_the_one_live_server_in_the_fallback_directory(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    live_pid = os.getpid()
    with _socket_file(tmp_path / f"prefork-{dead.pid}.ctl", listen=True), \
            _socket_file(tmp_path / f"prefork-{live_pid}.ctl", listen=True):
        (tmp_path / "prefork-notapid.ctl").touch()
        assert locate(None, {}, str(tmp_path)) == str(tmp_path / f"prefork-{live_pid}.ctl")
        with _socket_file(tmp_path / f"prefork-{os.getppid()}.ctl", listen=True):
            with pytest.raises(CtlError, match="several prefork servers are running"):
                locate(None, {}, str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CtlError, match="no running prefork found"):
        locate(None, {}, str(empty))


def test_locate_by_pidfile_tries_the_auto_locations_in_order(tmp_path):
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    with _socket_file(tmp_path / f"prefork-{os.getpid()}.ctl", listen=True):
        assert locate(str(pidfile), {}, str(tmp_path)) == str(tmp_path / f"prefork-{os.getpid()}.ctl")
        with _socket_file(tmp_path / "control.sock", listen=True):
            assert locate(str(pidfile), {}, str(tmp_path)) == str(tmp_path / "control.sock")
            with _socket_file(tmp_path / "app.pid.ctl", listen=True):
                assert locate(str(pidfile), {}, str(tmp_path)) == str(tmp_path / "app.pid.ctl")


# -- USR2: the socket follows the serving arbiter -----------------------------------------------

def test_control_socket_and_metrics_follow_a_usr2_upgrade(start_server, tmp_path):
    path, pidfile, port = tmp_path / "ctl.sock", tmp_path / "app.pid", free_port()
    server = start_server("observed:app", "--control-socket", str(path), "--pid", str(pidfile),
                          "--metrics-bind", f"127.0.0.1:{port}", workers=1)
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    assert status(path)["pid"] == server.pid
    new_pid = None
    try:
        server.signal(signal.SIGUSR2)
        assert server.wait_exit(timeout=40) == 0  # the old arbiter leaves once the new one serves
        new_pid = int(pidfile.read_text())
        assert new_pid != server.pid
        assert status(path)["pid"] == new_pid  # the path survived the old arbiter's exit
        started = psutil.Process(new_pid).create_time()
        wait_for(lambda: _metrics_start_time(metrics_url) == pytest.approx(started, abs=1), 15,
                 message="metrics served by the new arbiter")
        result = prefork("ctl", "stop", "--control-socket", str(path))
        assert result.returncode == 0, result.stderr
        wait_for(lambda: not path.exists(), 15, message="the new arbiter to exit and remove its socket")
    finally:
        if new_pid:
            stop_orphan(new_pid)


def _metrics_start_time(url: str) -> float | None:
    try:
        text = requests.get(url, timeout=2).text
    except requests.RequestException:
        return None
    return float(text.split("\nprocess_start_time_seconds ", 1)[1].split()[0])


def test_failed_usr2_upgrade_leaves_the_control_socket_with_the_old_arbiter(start_server, tmp_path):
    path, marker = tmp_path / "ctl.sock", tmp_path / "cannot-boot"
    server = start_server("observed:app", "--control-socket", str(path), workers=1,
                          env={"BOOT_MARKER": str(marker)})
    marker.touch()
    server.signal(signal.SIGUSR2)
    server.wait_log("Upgrade failed", timeout=30)
    assert status(path)["pid"] == server.pid
    assert server.get("/").status_code == 200
