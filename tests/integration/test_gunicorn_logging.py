"""Logging as gunicorn shops configure it, with a real server: logconfig_dict naming gunicorn's
loggers, syslog to a real unix datagram socket, --capture-output; and the checks that turn a
bad logging config into one line before any worker starts."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import APPS, base_env, prefork_command, wait_for
from prefork.config.logsetup import (ACCESS_LOGGER, ERROR_LOGGER, access_logger, check_logging,
                                     logging_dict, setup_logging)
from prefork.config.settings import Config, ConfigError

JSON_LOGGING_CONF = '''
import json
import logging


class JsonFormatter(logging.Formatter):
    def format(self, record):
        return json.dumps({"logger": record.name, "level": record.levelname,
                           "message": record.getMessage()})


logconfig_dict = {
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {"file": {"class": "logging.FileHandler", "filename": %(path)r,
                          "formatter": "json"}},
    "root": {"level": "WARNING", "handlers": []},  # gunicorn's default root names "console"
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["file"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["file"], "propagate": False},
    },
}
'''


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_logconfig_dict_for_gunicorn_loggers_gets_every_line(start_server, tmp_path: Path) -> None:
    log_file = tmp_path / "app.json.log"
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(JSON_LOGGING_CONF % {"path": str(log_file)})
    server = start_server("basic:app", "-c", str(config), workers=2)
    for path in ("/", "/missing", "/?q=1"):
        server.get(path)
    wanted = {'"GET / HTTP/1.1" 200', '"GET /missing HTTP/1.1" 404', '"GET /?q=1 HTTP/1.1" 200'}

    def access_lines() -> list[str]:
        return [r["message"] for r in records(log_file) if r["logger"] == ACCESS_LOGGER]
    wait_for(lambda: all(any(w in line for line in access_lines()) for w in wanted), 10,
             message="three access lines in the JSON file")
    assert len(access_lines()) >= 3  # the probe's request is there too
    assert any(r["logger"] == ERROR_LOGGER and r["message"].startswith("Booting worker")
               or "Listening at" in r["message"] for r in records(log_file))


@pytest.fixture
def syslog_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "log.sock"))
    sock.settimeout(0.05)
    yield sock
    sock.close()


def receive(sock: socket.socket, into: list[str]) -> None:
    try:
        while True:
            into.append(sock.recv(65536).decode("utf-8", "replace"))
    except TimeoutError:
        pass


def test_syslog_gets_error_and_access_lines_tagged_like_gunicorn(start_server, syslog_socket,
                                                                 tmp_path: Path) -> None:
    address = f"unix://{syslog_socket.getsockname()}#dgram"
    server = start_server("basic:app", "--log-syslog", "--log-syslog-to", address,
                          "--log-syslog-prefix", "shop", "--log-syslog-facility", "local3",
                          workers=1)
    assert server.get("/missing").status_code == 404
    seen: list[str] = []
    wait_for(lambda: receive(syslog_socket, seen) or any("/missing" in line for line in seen), 10,
             message="the access line in syslog")
    local3_info = f"<{19 * 8 + 6}>"  # facility local3 (19), severity info (6)
    access = next(line for line in seen if "/missing" in line)
    assert access.startswith(f"{local3_info}gunicorn.shop.access: [")
    assert '"GET /missing HTTP/1.1" 404' in access
    assert any(line.startswith(f"{local3_info}gunicorn.shop.error: [") and "Listening at" in line
               for line in seen)


def test_syslog_without_access_lines(start_server, syslog_socket) -> None:
    address = f"unix://{syslog_socket.getsockname()}#dgram"
    server = start_server("basic:app", "--log-syslog", "--log-syslog-to", address,
                          "--disable-redirect-access-to-syslog", workers=1)
    assert server.get("/missing").status_code == 404
    seen: list[str] = []
    wait_for(lambda: receive(syslog_socket, seen) or any("Booting worker" in s for s in seen), 10,
             message="the error log in syslog")
    receive(syslog_socket, seen)
    assert not any(".access:" in line for line in seen)


def test_capture_output_puts_workers_prints_in_the_error_log(start_server, tmp_path: Path) -> None:
    error_log = tmp_path / "error.log"
    server = start_server("printing:app", "--capture-output", "--error-logfile", str(error_log),
                          workers=1)
    assert server.get("/").status_code == 200
    worker = next(iter(server.worker_pids()))
    wait_for(lambda: f"printed to stdout by {worker}" in error_log.read_text()
             and f"written to stderr by {worker}" in error_log.read_text(), 10,
             message="the worker's output in the error log")


@pytest.mark.parametrize(("settings", "message"), [
    ({"logconfig_dict": {"handlers": {"h": {"class": "no.such.Handler"}}}},
     "logconfig_dict: Unable to configure handler 'h'"),
    ({"logconfig_json": "/nonexistent/log.json"}, "--log-config-json: cannot read"),
    ({"logconfig": "/nonexistent/log.toml"}, "--log-config: cannot read"),
])
def test_check_logging_reports_in_one_line_and_changes_nothing(settings: dict, message: str) -> None:
    before = list(logging.getLogger(ERROR_LOGGER).handlers)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as caught:
        check_logging(Config(**settings))
    assert "\n" not in str(caught.value)
    assert logging.getLogger(ERROR_LOGGER).handlers == before


def test_check_config_fails_on_a_bad_logconfig_json(tmp_path: Path) -> None:
    bad = tmp_path / "log.json"
    bad.write_text('{"version": 1, "handlers": {"h": {"class": "logging.NoSuchHandler"}}}')
    result = subprocess.run(prefork_command("--check-config", "--log-config-json", str(bad),
                                            "basic:app"), cwd=APPS, env=base_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "Unable to configure handler 'h'" in result.stderr


def test_logconfig_json_is_laid_over_gunicorns_defaults(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_text(json.dumps({"root": {"level": "WARNING", "handlers": []}}))
    label, config = logging_dict(Config(logconfig_json=str(path)))
    assert label == f"--log-config-json {path}"
    assert config["root"] == {"level": "WARNING", "handlers": []}  # replaced key by key
    assert set(config["loggers"]) == {"gunicorn.error", "gunicorn.access"}  # kept
    assert logging_dict(Config()) is None


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    names = (None, ERROR_LOGGER, ACCESS_LOGGER, "gunicorn.error", "gunicorn.access")
    saved = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in names}
    yield
    setup_logging(Config())
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.usefixtures("restore_loggers")
def test_gunicorn_logger_names_configure_prefork_loggers(tmp_path: Path) -> None:
    target = tmp_path / "out.log"
    setup_logging(Config(logconfig_dict={
        "handlers": {"f": {"class": "logging.FileHandler", "filename": str(target)}},
        "root": {"handlers": []},
        "loggers": {"gunicorn.access": {"handlers": ["f"], "level": "INFO", "propagate": False}},
    }))
    assert access_logger() is logging.getLogger(ACCESS_LOGGER)
    assert logging.getLogger(ACCESS_LOGGER).handlers == logging.getLogger("gunicorn.access").handlers
    setup_logging(Config())  # the default: access lines go to no logger
    assert access_logger() is None
