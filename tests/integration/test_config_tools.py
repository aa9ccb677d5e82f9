"""The config tools an operator scripts against, with the real command: --print-config output
loaded back with -c serves the same configuration, and --log-config (JSON or gunicorn's .ini,
whose gunicorn.error / gunicorn.access loggers drive prefork's) is checked by --check-config
and never ends in a traceback at start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import APPS, base_env, free_port, prefork_command, wait_for

RUN_TIMEOUT = 60

GUNICORN_INI = """\
[loggers]
keys=root, gunicorn.error, gunicorn.access

[handlers]
keys=file

[formatters]
keys=plain

[logger_root]
level=WARNING
handlers=

[logger_gunicorn.error]
level=INFO
handlers=file
propagate=0
qualname=gunicorn.error

[logger_gunicorn.access]
level=INFO
handlers=file
propagate=0
qualname=gunicorn.access

[handler_file]
class=FileHandler
formatter=plain
args=({path!r}, 'a')

[formatter_plain]
format=INI %(levelname)s %(message)s
"""


def run(*args: str, cwd: Path = APPS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(prefork_command(*args), cwd=cwd, env=base_env(), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)


def test_printed_config_loads_back_and_serves(start_server, tmp_path: Path) -> None:
    # A bind of our own: the default, 127.0.0.1:8000, may be taken on a developer's machine.
    bind = f"127.0.0.1:{free_port()}"
    printed = run("--print-config", "-w", "2", "-b", bind, "--keep-alive", "7", "-e", "X=1", "basic:app")
    assert printed.returncode == 0, printed.stderr
    config = tmp_path / "printed.conf.py"
    config.write_text(printed.stdout)
    again = run("--print-config", "-c", str(config))
    assert again.returncode == 0 and again.stdout == printed.stdout  # a fixed point
    # Started from it (APP comes from the file too), it serves instead of printing itself.
    server = start_server(str(config), "-c", workers=2)  # the command ends in `-c FILE`, no APP
    assert server.get("/").status_code == 200
    assert "print_config" not in server.log()


@pytest.mark.parametrize("name, content, message", [
    ("bad.json", "{not json", "--log-config {path}: line 1: Expecting property name"),
    ("noversion.json", "{}", "--log-config {path}: dictionary doesn't specify a version"),
    ("empty.ini", "[loggers]\nkeys=root\n", "--log-config {path}: KeyError: 'formatters'"),
    ("broken.ini", "[loggers\n", "--log-config {path}: File contains no section headers"),
])
def test_bad_log_config_is_one_line_for_check_config_and_at_start(tmp_path: Path, name: str,
                                                                   content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    checked = run("--check-config", "--log-config", str(path), "basic:app")
    started = run("--log-config", str(path), "-b", f"unix:{tmp_path}/never.sock", "basic:app")
    for result, status in ((checked, 1), (started, 2)):
        assert result.returncode == status
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert lines[0].startswith("prefork: error: " + message.format(path=path)), lines[0]


def test_gunicorn_ini_log_config_is_checked_and_drives_prefork_error(start_server, tmp_path: Path) -> None:
    log_file = tmp_path / "error.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(GUNICORN_INI.format(path=str(log_file)))
    checked = run("--check-config", "--log-config", str(ini), "basic:app")
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""
    server = start_server("basic:app", "--log-config", str(ini), workers=1)
    assert server.get("/").status_code == 200
    wait_for(lambda: "INI INFO Booting worker with pid: " in log_file.read_text(), 10,
             message="the arbiter's log lines in the .ini's file")
    # gunicorn.access configures prefork.access: access lines go through it, without
    # --access-logfile (docs/logging-and-metrics.md).
    wait_for(lambda: 'INI INFO ' in log_file.read_text() and '"GET / HTTP/1.1" 200' in log_file.read_text(),
             10, message="an access line in the .ini's file")
