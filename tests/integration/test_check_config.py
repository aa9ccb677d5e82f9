"""``prefork --check-config``: load the application and validate every setting, bind nothing,
exit 0 (valid) or non-zero with one line on stderr — what a deploy script runs before HUP."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import APPS, base_env, prefork_command

RUN_TIMEOUT = 60

# Apps that fail in the ways real projects do, written to a temporary directory.
BROKEN_APPS = {
    "raises_on_import.py": "import os\nSETTINGS = os.environ['NO_SUCH_VARIABLE_FOR_SURE']\n",
    "not_callable.py": "app = 'I am a string'\n",
    "no_app.py": "WORKERS = 4\n",
}


def check(*args: str, cwd: Path = APPS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(prefork_command("--check-config", *args), cwd=cwd, env=base_env(),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port this test listens on: anything that tried to bind it would fail."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_valid_app_exits_0_without_binding(held_port: int, tmp_path: Path) -> None:
    unix_path = tmp_path / "check.sock"
    result = check("-w", "3", "-b", f"127.0.0.1:{held_port}", "-b", f"unix:{unix_path}",
                   "basic:app")
    assert result.returncode == 0, result.stderr
    assert "basic:app" in result.stdout
    assert "already in use" not in result.stderr
    assert not unix_path.exists()  # a bind would have created the socket file


@pytest.mark.parametrize(("app", "message"), [
    ("broken_syntax:app", "broken_syntax.py:3: SyntaxError"),
    ("no_such_module:app", "cannot import 'no_such_module'"),
    ("basic:no_such_name", "module 'basic' has no attribute 'no_such_name'"),
    ("raises_on_import:app", "raises_on_import.py:2: KeyError: 'NO_SUCH_VARIABLE_FOR_SURE'"),
    ("not_callable:app", "'not_callable:app' is not callable"),
    ("no_app", "module 'no_app' has no attribute 'application' or 'app'"),
])
def test_broken_app_exits_1_with_one_line(app: str, message: str, tmp_path: Path,
                                          held_port: int) -> None:
    for name, source in BROKEN_APPS.items():
        (tmp_path / name).write_text(source)
    result = check("--chdir", str(tmp_path), "--pythonpath", str(APPS),
                   "-b", f"127.0.0.1:{held_port}", app, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prefork: error: ")
    assert message in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(("args", "message"), [
    (["-w", "0"], "--workers: must be an integer >= 1 or auto, got '0'"),
    (["-b", "127.0.0.1:99999"], "--bind: cannot parse '127.0.0.1:99999'"),
    (["--user", "no-such-user-here"], "--user: no such user"),
    (["--keyfile", "key.pem"], "--keyfile: needs --certfile"),
    (["--no-such-flag"], "unknown option --no-such-flag"),
])
def test_bad_setting_fails_with_one_line(args: list[str], message: str) -> None:
    """With --check-config any problem is exit 1 (gunicorn's behaviour): one code for CI."""
    result = check(*args, "basic:app")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prefork: error: ")
    assert message in lines[0]


def test_config_file_is_checked_too(tmp_path: Path) -> None:
    good = tmp_path / "good.conf.py"
    good.write_text("workers = 2\ntimeout = 60\n")
    bad = tmp_path / "bad.conf.py"
    bad.write_text("workers = 2\ntimeout = 'a minute'\n")
    assert check("-c", str(good), "basic:app").returncode == 0
    result = check("-c", str(bad), "basic:app")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"prefork: error: {bad}: timeout: must be a number of seconds >= 0, got 'a minute'"]
