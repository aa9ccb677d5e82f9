"""What prefork does with what a gunicorn user brings along, besides flags: -e/--env (raw_env),
the default config files (./prefork.conf.py, gunicorn's ./gunicorn.conf.py), $GUNICORN_CMD_ARGS,
and a refused gunicorn setting under --check-config. Nothing is read or skipped silently."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import base_env, prefork_command
from prefork.config.cli import load_config
from prefork.config.settings import ConfigError


def load_in(directory: Path, environ: dict[str, str] | None = None, *argv: str) -> tuple[object, list[str]]:
    """load_config from ``directory``; (the config, the warnings it logged)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("prefork.error")
    logger.addHandler(handler)
    try:
        cfg = load_config([*argv, "app:app"], environ=environ or {})
    finally:
        logger.removeHandler(handler)
    return cfg, [record.getMessage() for record in records]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_prefork_conf_py_is_the_default_config_file(project: Path) -> None:
    (project / "prefork.conf.py").write_text("workers = 3\n")
    cfg, warned = load_in(project)
    assert (cfg.workers, cfg.config, warned) == (3, str(project / "prefork.conf.py"), [])


def test_a_lone_gunicorn_conf_py_is_loaded_and_says_so(project: Path) -> None:
    (project / "gunicorn.conf.py").write_text("workers = 5\n")
    cfg, warned = load_in(project)
    assert (cfg.workers, cfg.config) == (5, str(project / "gunicorn.conf.py"))
    assert len(warned) == 1 and warned[0].startswith("Loading ./gunicorn.conf.py, gunicorn's default")


def test_gunicorn_conf_py_beside_a_prefork_file_is_not_read_and_says_so(project: Path) -> None:
    (project / "gunicorn.conf.py").write_text("workers = 5\n")
    (project / "pyproject.toml").write_text("[tool.prefork]\nworkers = 2\n")
    cfg, warned = load_in(project)
    assert cfg.workers == 2
    assert warned == ["./gunicorn.conf.py is not read: the configuration comes from ./pyproject.toml "
                      "(pass -c gunicorn.conf.py to use it instead)"]


def test_two_prefork_default_files_are_an_error(project: Path) -> None:
    (project / "prefork.conf.py").write_text("workers = 3\n")
    (project / "pyproject.toml").write_text("[tool.prefork]\nworkers = 2\n")
    with pytest.raises(ConfigError, match=r"both \./prefork\.conf\.py and \[tool\.prefork\]"):
        load_in(project)


def test_gunicorn_cmd_args_is_read_when_alone_and_says_so(project: Path) -> None:
    cfg, warned = load_in(project, {"GUNICORN_CMD_ARGS": "-w 6 --env A=1"})
    assert (cfg.workers, cfg.raw_env) == (6, ["A=1"])
    assert warned == ["Reading $GUNICORN_CMD_ARGS (gunicorn's) as $PREFORK_CMD_ARGS"]


def test_gunicorn_cmd_args_is_ignored_beside_prefork_cmd_args_and_says_so(project: Path) -> None:
    cfg, warned = load_in(project, {"GUNICORN_CMD_ARGS": "-w 6", "PREFORK_CMD_ARGS": "-w 2"})
    assert cfg.workers == 2
    assert warned == ["$GUNICORN_CMD_ARGS is ignored: $PREFORK_CMD_ARGS is set"]


def test_gunicorn_cmd_args_with_a_refused_gunicorn_flag_names_the_variable(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"^GUNICORN_CMD_ARGS: gunicorn option -k gevent is "
                                          r"refused by prefork: One worker model: "):
        load_in(project, {"GUNICORN_CMD_ARGS": "-k gevent"})


def test_gunicorn_cmd_args_with_an_ignored_gunicorn_flag_warns_naming_the_variable(
        project: Path) -> None:
    cfg, warned = load_in(project, {"GUNICORN_CMD_ARGS": "-k sync --no-sendfile -w 3"})
    assert cfg.workers == 3
    assert warned[1:] == ["GUNICORN_CMD_ARGS: gunicorn option --no-sendfile is not supported by "
                          "prefork; ignored (`wsgi.file_wrapper` around a regular file is always "
                          "sent with sendfile(2).)"]


@pytest.mark.parametrize(("value", "on"), [("off", False), ("v1", True), ("v2", True),
                                           ("auto", True), ("", True)])
def test_gunicorn_cmd_args_proxy_protocol_mode(project: Path, value: str, on: bool) -> None:
    """`off` once became APP, replaced by the command line's: the protocol was on."""
    cfg, _ = load_in(project, {"GUNICORN_CMD_ARGS": f"--proxy-protocol {value}"})
    assert (cfg.proxy_protocol, cfg.app) == (on, "app:app")


@pytest.mark.parametrize("value", ["A", "=1", ["A=1", 2]])
def test_env_entries_must_be_key_equals_value(project: Path, value: object) -> None:
    (project / "c.py").write_text(f"raw_env = {value!r}\n")
    with pytest.raises(ConfigError, match=r"^c\.py: raw_env: must be KEY=VALUE"):
        load_in(project, None, "-c", "c.py")


def test_check_config_exits_1_on_a_refused_gunicorn_setting(tmp_path: Path) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text('workers = 2\nworker_class = "uvicorn.workers.UvicornWorker"\n')
    result = subprocess.run(prefork_command("--check-config", "-c", str(config), "app:app"),
                            cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"prefork: error: {config}: gunicorn setting worker_class = 'uvicorn.workers.UvicornWorker' "
        f"is refused by prefork: One worker model: an epoll loop that reads requests without "
        f"blocking and runs the app synchronously, with --threads for I/O-bound apps. `sync` and "
        f"`gthread` describe it and are accepted; any other class (gevent, eventlet, uvicorn, "
        f"asgi, tornado) is refused: the app would run without the concurrency it was written for."]


def test_env_reaches_the_app_before_it_is_imported(start_server, tmp_path: Path) -> None:
    config = tmp_path / "env.conf.py"
    config.write_text('raw_env = ["PREFORK_TEST_FROM_FILE=file"]\n')
    server = start_server("osenv:app", "-c", str(config), workers=1)
    assert server.get("/?PREFORK_TEST_FROM_FILE").text == "file <unset>"
    server = start_server("osenv:app", "-e", "PREFORK_TEST_AT_IMPORT=early", "--env", "B=x=y", workers=1)
    assert server.get("/?B").text == "x=y early"


def test_config_from_python_module_by_name(project: Path) -> None:
    """gunicorn's `-c python:MODULE`: imported by name from the starting directory, read like a
    file (its gunicorn-only names judged the same way), recorded as given."""
    (project / "pf_conf_pkg").mkdir()
    (project / "pf_conf_pkg" / "__init__.py").write_text("")
    (project / "pf_conf_pkg" / "base.py").write_text("workers = 4\n")
    (project / "pf_conf_pkg" / "prod.py").write_text(
        "from .base import *\n\ntimeout = 90\nsendfile = False\n")
    cfg, warned = load_in(project, None, "-c", "python:pf_conf_pkg.prod")
    assert (cfg.workers, cfg.timeout, cfg.config) == (4, 90.0, "python:pf_conf_pkg.prod")
    assert len(warned) == 1 and warned[0].startswith(
        f"{project / 'pf_conf_pkg' / 'prod.py'}: gunicorn setting 'sendfile' is not supported")


def test_config_module_is_read_afresh_on_every_load(project: Path) -> None:
    """A HUP re-reads the configuration: an edited module must not come from sys.modules."""
    module = project / "pf_conf_fresh.py"
    module.write_text("workers = 2\n")
    assert load_in(project, None, "-c", "python:pf_conf_fresh")[0].workers == 2
    module.write_text("workers = 5\n")
    os.utime(module, (0, 0))  # the edit must not depend on a newer mtime
    assert load_in(project, None, "-c", "python:pf_conf_fresh")[0].workers == 5


def test_config_file_prefix_is_a_path(project: Path) -> None:
    (project / "c.py").write_text("workers = 7\n")
    cfg, _ = load_in(project, None, "-c", "file:c.py")
    assert (cfg.workers, cfg.config) == (7, str(project / "c.py"))


@pytest.mark.parametrize(("location", "message"), [
    ("python:pf_no_such_module", "--config: cannot import 'python:pf_no_such_module': "
                                 "No module named 'pf_no_such_module'"),
    ("python:pf_no_such_pkg.conf", "--config: cannot import 'python:pf_no_such_pkg.conf': "
                                   "No module named 'pf_no_such_pkg'"),
    ("python:", "--config: 'python:': '' is not a module name"),
    ("file:missing.py", "--config: cannot read 'missing.py': No such file or directory"),
])
def test_config_location_errors_are_one_line(project: Path, location: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_in(project, None, "-c", location)
    assert str(caught.value) == message


def test_config_module_error_names_its_file_and_line(project: Path) -> None:
    (project / "pf_conf_broken.py").write_text("workers = 2\nraise RuntimeError('no secrets')\n")
    with pytest.raises(ConfigError) as caught:
        load_in(project, None, "-c", "python:pf_conf_broken")
    assert str(caught.value) == (f"config file {project / 'pf_conf_broken.py'}: line 2: "
                                 "RuntimeError: no secrets")


def test_print_config_with_a_config_module(tmp_path: Path) -> None:
    """The real command, from the directory holding the module (the console script does not
    put it on sys.path: prefork does, as gunicorn does)."""
    (tmp_path / "pf_conf_print.py").write_text("workers = 3\nbind = '127.0.0.1:23001'\n")
    prefork = Path(sys.executable).with_name("prefork")  # the console script pip installed
    result = subprocess.run([str(prefork), "--print-config", "-c", "python:pf_conf_print", "app:app"],
                            cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "workers = 3" in result.stdout.splitlines()
    assert "bind = ['127.0.0.1:23001']" in result.stdout.splitlines()


@pytest.mark.parametrize(("config", "args", "env", "status"), [
    ("check_config = True\nworker_class = 'gevent'\n", [], {}, 1),  # the problem in the file
    ("check_config = True\n", ["--bind", "127.0.0.1:99999"], {}, 1), # ... after loading it
    ("workers = 2\n", [], {"GUNICORN_CMD_ARGS": "--check-config -k gevent"}, 1),
    ("workers = 2\n", [], {"PREFORK_CMD_ARGS": "--check-config -w 0"}, 1),
    ("workers = 2\n", ["-w", "0"], {}, 2),                           # no check: a usage error
])
def test_check_config_from_a_file_or_variable_exits_1(tmp_path: Path, config: str, args: list[str],
                                                      env: dict[str, str], status: int) -> None:
    """gunicorn's --check-config is exit 1 for any problem, wherever check_config was set."""
    (tmp_path / "gunicorn.conf.py").write_text(config)
    result = subprocess.run(prefork_command("-c", "gunicorn.conf.py", *args, "app:app"),
                            cwd=tmp_path, env=base_env(**env), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == status, result.stderr
    assert result.stderr.splitlines()[-1].startswith("prefork: error: ")


@pytest.mark.parametrize(("name", "config"), [
    ("gunicorn.conf.py", "check_config = True\nimport os\nworkers = int(os.environ['NOPE'])\n"),
    ("prefork.toml", "check_config = true\nworkers = 0\n"),
    ("prefork.toml", "check-config = true\nworker_class = 'gevent'\n"),
])
def test_check_config_from_a_file_that_fails_exits_1(tmp_path: Path, name: str, config: str) -> None:
    """A file that asked for check_config and then fails (raises, a bad value, a refused
    gunicorn name) is still a check: exit 1."""
    (tmp_path / name).write_text(config)
    result = subprocess.run(prefork_command("-c", name, "app:app"), cwd=tmp_path, env=base_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith("prefork: error: ")


def test_check_config_from_a_config_module_that_raises_exits_1(tmp_path: Path) -> None:
    (tmp_path / "pf_cc_raise.py").write_text("check_config = True\nraise RuntimeError('no')\n")
    result = subprocess.run(prefork_command("-c", "python:pf_cc_raise", "app:app"), cwd=tmp_path,
                            env=base_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
