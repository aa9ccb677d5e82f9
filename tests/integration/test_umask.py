"""The umask: prefork never loosens the one it was started with (systemd's UMask=0027), and
`-m` sets one explicitly. Real servers on a unix socket they create; the client checks the
modes of the socket and of a file the app creates."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import APPS, base_env, prefork_command, wait_for
from httpclient import unix_request

INHERITED = 0o027  # the shipped unit's UMask=


def serve_under_umask(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    socket_path = tmp_path / "app.sock"
    log = open(tmp_path / "prefork.log", "wb")
    proc = subprocess.Popen(prefork_command("-w", "1", "-b", f"unix:{socket_path}", *args, "touch:app"),
                            cwd=APPS, env=base_env(), stdout=log, stderr=subprocess.STDOUT,
                            umask=INHERITED)
    log.close()
    wait_for(lambda: proc.poll() is not None or socket_path.exists(), 20, message="the unix socket")
    assert proc.poll() is None, (tmp_path / "prefork.log").read_text()
    return proc, socket_path


def created_mode(socket_path: Path, target: Path) -> int:
    """Ask the app to create ``target``; the mode it reports, checked against the file."""
    response = unix_request(str(socket_path), f"GET /?{target} HTTP/1.1\r\nHost: x\r\n"
                                              "Connection: close\r\n\r\n".encode())
    assert response.startswith(b"HTTP/1.1 200"), response
    mode = int(response.rsplit(b"\r\n\r\n", 1)[1], 8)
    assert mode == stat.S_IMODE(target.stat().st_mode)
    return mode


@pytest.mark.parametrize("args, expected_file, expected_socket", [
    ((), 0o640, 0o750),                  # no -m: the inherited 027 holds
    (("-m", "0o007"), 0o660, 0o770),     # -m: exactly what was asked
])
def test_umask_of_socket_and_app_files(tmp_path, args, expected_file, expected_socket):
    proc, socket_path = serve_under_umask(tmp_path, *args)
    try:
        assert stat.S_IMODE(os.stat(socket_path).st_mode) == expected_socket
        assert created_mode(socket_path, tmp_path / "made-by-app") == expected_file
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("mask, warned", [("0", True), ("0o002", False), ("0o020", True), ("022", False)])
def test_a_umask_that_lets_anyone_write_is_warned_about(mask, warned):
    """gunicorn applies its umask (default 0) to its unix sockets only; a config file carried
    over with `umask = 0` would make every file prefork and the app create world-writable."""
    result = subprocess.run(prefork_command("--check-config", "-m", mask, "basic:app"), cwd=APPS,
                            env=base_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert ("lets any user write" in result.stderr) is warned, result.stderr
