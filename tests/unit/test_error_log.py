"""The error log: format, level, file or stderr, the journal's form, --log-config, and
reopening after logrotate renamed the file."""

import json
import logging
import os
import re
import sys

import pytest

from prefork.config.logsetup import (ERROR_LOGGER, JournalFormatter, reopen_log_files,
                                     setup_logging)
from prefork.config.settings import Config, ConfigError

LINE = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[(?P<pid>\d+)\] "
                  r"\[(?P<level>[A-Z]+)\] (?P<message>.*)")


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch):
    """Put the error logger and the root logger back as they were, closing what a test opened."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    saved = {}
    for name in (ERROR_LOGGER, None):
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    yield
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if h not in handlers]:
            logger.removeHandler(handler)
            handler.close()
        for handler in handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled


def lines(path):
    return path.read_text().splitlines()


def test_error_log_to_a_file_in_gunicorn_format(tmp_path):
    path = tmp_path / "error.log"
    logger = setup_logging(Config(errorlog=str(path)))
    assert logger.name == "prefork.error"
    logger.info("Booting worker with pid %d", 42)
    match = LINE.fullmatch(lines(path)[0])
    assert match, lines(path)
    assert (int(match["pid"]), match["level"], match["message"]) == \
        (os.getpid(), "INFO", "Booting worker with pid 42")


@pytest.mark.parametrize(("level", "shown"), [
    ("debug", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]),
    ("info", ["INFO", "WARNING", "ERROR", "CRITICAL"]),
    ("warning", ["WARNING", "ERROR", "CRITICAL"]),
    ("error", ["ERROR", "CRITICAL"]),
    ("critical", ["CRITICAL"]),
])
def test_log_level_filters(tmp_path, level, shown):
    path = tmp_path / "error.log"
    logger = setup_logging(Config(errorlog=str(path), loglevel=level))
    for name in ("debug", "info", "warning", "error", "critical"):
        getattr(logger, name)(name)
    assert [LINE.fullmatch(line)["level"] for line in lines(path)] == shown


def test_setting_up_again_replaces_the_handler(tmp_path):
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    setup_logging(Config(errorlog=str(first)))
    logger = setup_logging(Config(errorlog=str(second)))  # a reload
    logger.warning("once")
    assert lines(first) == []
    assert [LINE.fullmatch(line)["message"] for line in lines(second)] == ["once"]


def test_reopen_after_logrotate_renamed_the_file(tmp_path):
    path, rotated = tmp_path / "error.log", tmp_path / "error.log.1"
    logger = setup_logging(Config(errorlog=str(path)))
    logger.info("one")
    os.rename(path, rotated)
    logger.info("two")  # still the open file, now named error.log.1
    reopen_log_files()
    logger.info("three")
    assert [LINE.fullmatch(line)["message"] for line in lines(rotated)] == ["one", "two"]
    assert [LINE.fullmatch(line)["message"] for line in lines(path)] == ["three"]


def test_reopen_leaves_truncating_handlers_alone(tmp_path):
    handler = logging.FileHandler(tmp_path / "w.log", mode="w")
    logger = logging.getLogger("prefork.test.truncating")
    logger.addHandler(handler)
    try:
        stream = handler.stream
        reopen_log_files()
        assert handler.stream is stream
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_error_log_defaults_to_stderr(capsys):
    logger = setup_logging(Config())
    logger.error("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert LINE.fullmatch(captured.err.strip())["message"] == "to stderr"


def test_journal_stream_drops_the_timestamp_and_adds_priorities(tmp_path, monkeypatch):
    path = tmp_path / "journal"
    with open(path, "w") as journal:
        status = os.fstat(journal.fileno())
        monkeypatch.setattr(sys, "stderr", journal)
        monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
        logger = setup_logging(Config())
        logger.info("ready")
        logger.error("failed\nTraceback line")
    pid = os.getpid()
    assert lines(path) == [f"<6>[{pid}] [INFO] ready", f"<3>[{pid}] [ERROR] failed",
                           "<3>Traceback line"]


def test_journal_stream_of_another_file_is_ignored(tmp_path, monkeypatch):
    path = tmp_path / "redirected"
    with open(path, "w") as redirected:
        monkeypatch.setattr(sys, "stderr", redirected)
        monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # inherited, but stderr was redirected
        setup_logging(Config()).info("plain")
    assert LINE.fullmatch(lines(path)[0])["message"] == "plain"


@pytest.mark.parametrize(("level", "priority"), [
    (logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3),
    (logging.CRITICAL, 2), (logging.INFO + 5, 6), (logging.CRITICAL + 10, 2),
])
def test_journal_priorities_follow_syslog(level, priority):
    record = logging.LogRecord("prefork.error", level, __file__, 1, "message", None, None)
    assert JournalFormatter().format(record).startswith(f"<{priority}>[")


def write_json(path, config):
    path.write_text(json.dumps(config))
    return str(path)


def test_log_config_json_replaces_the_setup_and_is_reopened(tmp_path):
    target = tmp_path / "custom.log"
    config = write_json(tmp_path / "logging.json", {
        "version": 1,
        "formatters": {"bare": {"format": "%(levelname)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(target),
                              "formatter": "bare"}},
        "loggers": {"prefork.error": {"handlers": ["file"], "level": "WARNING",
                                      "propagate": False}},
    })
    logger = setup_logging(Config(logconfig=config, errorlog=str(tmp_path / "unused.log")))
    logger.info("filtered")
    logger.warning("kept")
    os.rename(target, tmp_path / "custom.log.1")
    reopen_log_files()
    logger.error("after rotation")
    assert lines(tmp_path / "custom.log.1") == ["WARNING kept"]
    assert lines(target) == ["ERROR after rotation"]
    assert not (tmp_path / "unused.log").exists()


def test_log_config_toml_keeps_other_loggers_working(tmp_path):
    target = tmp_path / "toml.log"
    (tmp_path / "logging.toml").write_text(f"""
        version = 1
        [handlers.file]
        class = "logging.FileHandler"
        filename = "{target}"
        [loggers."prefork.error"]
        handlers = ["file"]
        level = "INFO"
        propagate = false
    """.replace("\n        ", "\n"))
    existing = logging.getLogger("prefork.test.existing")
    setup_logging(Config(logconfig=str(tmp_path / "logging.toml"))).info("via toml")
    assert lines(target) == ["via toml"]
    assert not existing.disabled  # disable_existing_loggers defaults to false


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.json", "{",
     "--log-config {path}: line 1: Expecting property name enclosed in double quotes"),
    ("list.json", "[]", "--log-config {path}: must hold a dictConfig dictionary, got list"),
    ("noversion.json", "{}", "--log-config {path}: dictionary doesn't specify a version"),
    ("badclass.json", json.dumps({"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}),
     "--log-config {path}: Unable to configure handler 'h': Cannot resolve 'no.such.Handler': "
     "No module named 'no'"),
    ("bad.toml", "version = ", "--log-config {path}: Invalid value (at end of document)"),
])
def test_bad_log_config_is_a_config_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        setup_logging(Config(logconfig=str(path)))
    assert str(caught.value) == message.replace("{path}", str(path))


@pytest.mark.parametrize(("cfg", "message"), [
    (Config(logconfig="/nonexistent/logging.json"),
     "--log-config: cannot read '/nonexistent/logging.json': No such file or directory"),
    (Config(errorlog="/nonexistent/dir/error.log"),
     "--error-logfile: cannot open '/nonexistent/dir/error.log': No such file or directory"),
])
def test_unreadable_or_unwritable_paths_are_config_errors(cfg, message):
    with pytest.raises(ConfigError) as caught:
        setup_logging(cfg)
    assert str(caught.value) == message


def test_switching_to_a_log_config_without_the_error_logger_sends_it_to_root(tmp_path):
    setup_logging(Config(errorlog=str(tmp_path / "before.log")))  # then a reload switches
    target = tmp_path / "root.log"
    config = write_json(tmp_path / "root.json", {
        "version": 1,
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(target)}},
        "root": {"handlers": ["file"], "level": "INFO"},
    })
    setup_logging(Config(logconfig=config)).info("to root")
    assert lines(target) == ["to root"]
    assert lines(tmp_path / "before.log") == []
