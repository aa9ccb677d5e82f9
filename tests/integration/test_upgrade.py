"""USR2: a binary upgrade hands the listeners to a new arbiter under load, and a build that
cannot start leaves the old one serving. (The control socket and the metrics across an upgrade
are in test_control_socket.py.)"""

from __future__ import annotations

import re
import signal

import psutil

from conftest import stop_orphan, wait_for
from httpclient import unix_request
from loadgen import Load


def test_usr2_upgrade_under_load_hands_over_to_a_new_arbiter(start_server, tmp_path):
    pidfile = tmp_path / "prefork.pid"
    server = start_server("lifecycle:app", "--pid", str(pidfile), workers=2)
    wait_for(pidfile.exists, 10, message="pidfile")
    assert int(pidfile.read_text()) == server.pid
    new_pid = None
    try:
        with Load(server.url, keepalive_clients=3, close_clients=2) as load:
            load.wait_successes(30)
            server.signal(signal.SIGUSR2)
            assert server.wait_exit(timeout=40) == 0  # the old arbiter leaves on its own
            new_pid = int(pidfile.read_text())
            load.wait_successes(load.result.succeeded + 50)
        assert load.result.failed == 0, load.result.summary()
        assert new_pid != server.pid
        log = server.log()
        assert f"Upgrade: replaced by the new arbiter (pid: {new_pid}); retiring the workers" in log
        assert "Handling signal: TERM" not in log  # no TERM was sent
        new_arbiter = psutil.Process(new_pid)
        assert "prefork: arbiter" in " ".join(new_arbiter.cmdline())
        served_by = {int(server.get("/").text.split()[1]) for _ in range(10)}
        assert served_by <= {child.pid for child in new_arbiter.children()}
    finally:
        if new_pid:
            stop_orphan(new_pid)


def test_usr2_with_a_broken_build_keeps_the_old_arbiter(start_server, tmp_path):
    marker = tmp_path / "cannot-boot"
    pidfile = tmp_path / "prefork.pid"
    server = start_server("lifecycle:app", "--pid", str(pidfile), workers=1, env={"BOOT_MARKER": str(marker)})
    marker.touch()
    server.signal(signal.SIGUSR2)
    server.wait_log("Upgrade failed", timeout=30)
    assert server.proc.poll() is None
    assert server.get("/").status_code == 200
    assert int(pidfile.read_text()) == server.pid


def test_term_before_the_hand_over_leaves_the_unix_socket_to_the_new_arbiter(start_server, tmp_path):
    """TERM reaches the old arbiter while the new one still boots: the old one stops, and the
    socket file it shares with the new one stays, or unix-socket clients could never connect
    again."""
    hold, path, pidfile = tmp_path / "hold", tmp_path / "prefork.sock", tmp_path / "prefork.pid"
    server = start_server("lifecycle:app", "-b", f"unix:{path}", "--pid", str(pidfile), bind=False,
                          workers=1, env={"BOOT_HOLD": str(hold)})
    wait_for(path.exists, 10, message="socket file")
    hold.touch()  # the new arbiter's workers wait in their import
    server.signal(signal.SIGUSR2)
    server.wait_log("Upgrade: started new arbiter")
    new_pid = int(re.search(r"Upgrade: started new arbiter \(pid: (\d+)\)", server.log()).group(1))
    try:
        server.signal(signal.SIGTERM)
        assert server.wait_exit(timeout=30) == 0
        assert path.exists()
        hold.unlink()
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(new_pid), 30,
                 message="the new arbiter serving")
        data = unix_request(str(path), b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        stop_orphan(new_pid)
