"""What an operator sees when the command line, the config or the environment is wrong:
one line on stderr that names the setting and the value, a non-zero exit, never a hang, never
a traceback."""

from __future__ import annotations

import errno
import os
import socket
import subprocess

import pytest

from conftest import APPS, base_env, free_port, prefork_command
from httpclient import unix_request
from prefork.server.sockets import _bind_error

RUN_TIMEOUT = 30


def run(*args: str, cwd=APPS) -> subprocess.CompletedProcess:
    return subprocess.run(prefork_command(*args), cwd=cwd, env=base_env(), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prefork: error: ")
    return lines[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--wrokers", "2", "basic:app"], "unknown option --wrokers (did you mean --workers?)"),
    (["-w", "0", "basic:app"], "--workers: must be an integer >= 1 or auto, got '0'"),
    (["-w", "abc", "basic:app"], "--workers: must be an integer >= 1 or auto, got 'abc'"),
    (["-b", "localhost:http", "basic:app"], "--bind: cannot parse 'localhost:http'"),
    (["-t", "soon", "basic:app"], "--timeout:"),
    ([], "no application given"),
])
def test_usage_errors_exit_2_with_one_line(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in one_error_line(result)


def test_broken_config_file_names_the_file_and_line(tmp_path):
    conf = tmp_path / "prefork.conf.py"
    conf.write_text("workers = 2\nbind = [\n")
    result = run("-c", str(conf), "basic:app")
    assert result.returncode == 2
    line = one_error_line(result)
    assert str(conf) in line and "SyntaxError" in line


def test_port_in_use_is_one_line_not_a_hang():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = run("-b", f"127.0.0.1:{port}", "basic:app")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "[ERROR]" in line]
    assert errors == [errors[0]] and f"cannot bind 127.0.0.1:{port}: address already in use" in errors[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may bind any port")
def test_privileged_port_is_permission_denied():
    result = run("-b", "127.0.0.1:1", "basic:app")
    assert result.returncode == 1
    assert "permission denied" in result.stderr


def test_permission_denied_message_says_what_to_do():
    message = _bind_error("127.0.0.1:80", OSError(errno.EACCES, "Permission denied"))
    assert message.startswith("cannot bind 127.0.0.1:80: permission denied")
    assert "CAP_NET_BIND_SERVICE" in message and "socket unit" in message


@pytest.mark.parametrize(("spec", "expected"), [
    ("no_such_module:app", "no_such_module"),
    ("basic:no_such_attr", "no_such_attr"),
    ("basic:ROUTES", "not callable"),
])
def test_app_that_cannot_load_exits_nonzero_with_its_error(spec, expected):
    port = free_port()
    result = run("-w", "1", "-b", f"127.0.0.1:{port}", spec)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert expected in result.stderr


def test_stale_unix_socket_is_replaced_and_a_live_one_refused(tmp_path, start_server):
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a crashed server leaves
    start_server("basic:app", "-b", f"unix:{path}", bind=False, workers=1, probe="")
    # bound before the workers were forked: no waiting needed
    answer = unix_request(str(path), b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK")
    second = run("-b", f"unix:{path}", "basic:app")
    assert second.returncode == 1
    assert f"cannot bind unix:{path}: another server is listening on it" in second.stderr


def test_path_that_is_not_a_socket_is_never_removed(tmp_path):
    path = tmp_path / "important.txt"
    path.write_text("data")
    result = run("-b", f"unix:{path}", "basic:app")
    assert result.returncode == 1
    assert "exists and is not a socket" in result.stderr
    assert path.read_text() == "data"
