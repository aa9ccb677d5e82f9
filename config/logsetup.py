"""The error log: logger "prefork.error", to stderr (default) or a file, in gunicorn's format.

    [2026-11-21 10:00:00 +0000] [1234] [INFO] Booting worker

Under systemd the journal stores stderr and timestamps each line itself, so when stderr *is*
the journal stream (JOURNAL_STREAM names its device:inode, systemd.exec(5)) the timestamp is
left out and every line starts with its syslog priority, `<6>[1234] [INFO] ...`, which the
journal parses and strips (SyslogLevelPrefix=, on by default; sd-daemon(3)). Every line of a
multi-line record carries the prefix, so a traceback is not logged as info from its second
line on. The pid stays in the text: the journal attributes a shared stderr stream to the
process systemd started, not to the worker that wrote the line.

`--log-config FILE` (a logging.dictConfig dictionary as JSON or TOML, or gunicorn's
logging.fileConfig `.ini` file) replaces all of this. In an `.ini` file, a logger whose qualname
is gunicorn's `gunicorn.error` configures `prefork.error` (and one for `gunicorn.access` is
reported as having no effect), so a gunicorn logging file does what it did there.

USR1 calls reopen_log_files(): every FileHandler opened for appending is reopened by path, so
after logrotate renames the file the next lines go to a new file (no copytruncate needed).
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import os
import sys
import tomllib
from typing import Any

from .settings import Config, ConfigError

ERROR_LOGGER = "prefork.error"
#: --log-config files in logging.fileConfig's format (gunicorn's --log-config); others are dictConfig.
INI_SUFFIXES = (".ini", ".conf", ".cfg")
#: gunicorn's logger names in a fileConfig -> prefork's (None: prefork has no such logger).
GUNICORN_LOGGERS = {"gunicorn.error": ERROR_LOGGER, "gunicorn.access": None}
LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
JOURNAL_FORMAT = "[%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
STDERR = "-"

# logging level -> syslog priority (syslog(3): 2 crit, 3 err, 4 warning, 6 info, 7 debug),
# highest first; a level between two takes the priority of the one below it.
SYSLOG_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                     (logging.INFO, 6), (logging.NOTSET, 7))

_installed: list[logging.Handler] = []  # our handlers on the error logger, replaced on reload


class JournalFormatter(logging.Formatter):
    """No timestamp; a `<N>` syslog priority at the start of every line."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        priority = next(p for level, p in SYSLOG_PRIORITIES if record.levelno >= level)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def setup_logging(cfg: Config) -> logging.Logger:
    """Configure the error logger from cfg (again on every reload) and return it."""
    logger = logging.getLogger(ERROR_LOGGER)
    for handler in _installed:
        logger.removeHandler(handler)
        handler.close()
    _installed.clear()
    logger.setLevel(logging.NOTSET)  # as if we had never touched it: --log-config decides
    logger.propagate = True
    if cfg.logconfig:
        if cfg.logconfig.endswith(INI_SUFFIXES):
            _apply_file_config(cfg.logconfig)
        else:
            _apply_dict_config(cfg.logconfig)
        return logger
    if cfg.errorlog == STDERR:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        formatter = JournalFormatter() if stderr_is_journal() else logging.Formatter(LOG_FORMAT,
                                                                                     DATE_FORMAT)
    else:
        handler = _open_file(cfg.errorlog)
        formatter = logging.Formatter(LOG_FORMAT, DATE_FORMAT)
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.setLevel(cfg.loglevel.upper())
    logger.propagate = False  # the application's root handlers must not repeat our lines
    _installed.append(handler)
    return logger


def reopen_log_files() -> None:
    """Reopen every FileHandler in the logging tree that appends: ours, the ones a --log-config
    created and the access log's. Handlers opened with mode "w" are left alone, since reopening
    would truncate a file that was not rotated."""
    loggers = [logging.getLogger(), *(logger for logger in logging.root.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    handlers = {id(h): h for logger in loggers for h in logger.handlers
                if isinstance(h, logging.FileHandler) and h.mode.startswith("a")}
    for handler in handlers.values():
        _reopen(handler)


def stderr_is_journal() -> bool:
    """True when stderr is the journal stream systemd connected (systemd.exec(5): compare
    JOURNAL_STREAM with the device and inode of fd 2), not a pipe or file it was redirected to."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        status = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):  # stderr replaced by an object without a descriptor
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


def _open_file(path: str) -> logging.FileHandler:
    try:
        return logging.FileHandler(path, mode="a", encoding="utf-8", errors="backslashreplace")
    except OSError as exc:
        raise ConfigError(f"--error-logfile: cannot open {path!r}: {exc.strerror}") from None


def _reopen(handler: logging.FileHandler) -> None:
    """What WatchedFileHandler does when it notices a rename, done on request instead of with
    a stat() before every record."""
    handler.acquire()
    try:
        if handler.stream is not None:
            handler.stream.flush()
            handler.stream.close()
        handler.stream = handler._open()  # the stdlib's own (re)open hook, see WatchedFileHandler
    finally:
        handler.release()


def _apply_dict_config(path: str) -> None:
    config = _read_dict_config(path)
    config.setdefault("disable_existing_loggers", False)
    try:
        logging.config.dictConfig(config)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"--log-config {path}: {exc}{cause}".replace("\n", " ")) from exc


def _apply_file_config(path: str) -> None:
    """gunicorn's --log-config: a logging.fileConfig file, its gunicorn logger names mapped."""
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file)
    except OSError as exc:
        raise ConfigError(f"--log-config: cannot read {path!r}: {exc.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"--log-config {path}: {exc}".replace("\n", " ")) from None
    for section in parser.sections():
        qualname = parser.get(section, "qualname", fallback=None)
        if section.startswith("logger_") and qualname in GUNICORN_LOGGERS:
            if GUNICORN_LOGGERS[qualname] is None:
                logging.getLogger(ERROR_LOGGER).warning(
                    "--log-config %s: [%s] (%s) has no effect: prefork's access log is "
                    "--access-logfile", path, section, qualname)
            else:
                parser.set(section, "qualname", GUNICORN_LOGGERS[qualname])
    try:
        logging.config.fileConfig(parser, disable_existing_loggers=False)
    except Exception as exc:  # fileConfig evaluates the file's handler args: anything can fail
        raise ConfigError(f"--log-config {path}: {type(exc).__name__}: {exc}".replace("\n", " ")) from exc


def _read_dict_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError(f"--log-config: cannot read {path!r}: {exc.strerror}") from None
    try:
        if path.endswith(".toml"):
            config = tomllib.loads(data.decode("utf-8"))
        else:
            config = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--log-config {path}: line {exc.lineno}: {exc.msg}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--log-config {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"--log-config {path}: must hold a dictConfig dictionary, "
                          f"got {type(config).__name__}")
    return config
