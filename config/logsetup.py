"""The error log: logger "prefork.error", to stderr (default) or a file, in gunicorn's format.

    [2026-11-21 10:00:00 +0000] [1234] [INFO] Booting worker

Under systemd the journal stores stderr and timestamps each line itself, so when stderr *is*
the journal stream (JOURNAL_STREAM names its device:inode, systemd.exec(5)) the timestamp is
left out and every line starts with its syslog priority, `<6>[1234] [INFO] ...`, which the
journal parses and strips (SyslogLevelPrefix=, on by default; sd-daemon(3)). Every line of a
multi-line record carries the prefix, so a traceback is not logged as info from its second
line on. The pid stays in the text: the journal attributes a shared stderr stream to the
process systemd started, not to the worker that wrote the line.

A dictConfig dictionary replaces all of this: `logconfig_dict` (in a Python config file) or
`--log-config-json FILE`, each laid over gunicorn's default dictionary key by key as gunicorn
does (GUNICORN_DEFAULTS), or `--log-config FILE` taken as it is: JSON or TOML, or gunicorn's
logging.fileConfig `.ini` file (INI_SUFFIXES). A logging config written for gunicorn names the
loggers `gunicorn.error` and `gunicorn.access`: such an entry (a dictionary's key, an `.ini`
logger's qualname) configures `prefork.error` / `prefork.access` as well (unless the config
names those too), so both names share the handlers. When the access logger ends up with handlers of its own, the
access log sends every line through it as well (see workers/accesslog.py).

`--log-syslog` adds a SysLogHandler to the error loggers, and to the access loggers unless
`--disable-redirect-access-to-syslog`; `--statsd-host` adds a LogLevelCounter (config/statsd.py)
to prefork.error. Both are installed after any dictConfig, in the arbiter, so the forked
workers inherit them. `--capture-output` points fds 1 and 2 at the error log file.

USR1 calls reopen_log_files(): every FileHandler opened for appending is reopened by path, so
after logrotate renames the file the next lines go to a new file (no copytruncate needed).
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import logging.handlers
import os
import socket
import sys
import tomllib
from typing import Any

from .settings import SYSLOG_PORT, Config, ConfigError, with_default_port
from .statsd import LogLevelCounter, StatsdSocket

ERROR_LOGGER = "prefork.error"
ACCESS_LOGGER = "prefork.access"
#: A gunicorn logging config's logger names -> ours (configured together, see the docstring).
GUNICORN_LOGGERS = {"gunicorn.error": ERROR_LOGGER, "gunicorn.access": ACCESS_LOGGER}
ERROR_LOGGERS = (ERROR_LOGGER, "gunicorn.error")
ACCESS_LOGGERS = (ACCESS_LOGGER, "gunicorn.access")
#: --log-config files in logging.fileConfig's format (gunicorn's --log-config); others are dictConfig.
INI_SUFFIXES = (".ini", ".conf", ".cfg")
LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
JOURNAL_FORMAT = "[%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
STDERR = "-"

# logging level -> syslog priority (syslog(3): 2 crit, 3 err, 4 warning, 6 info, 7 debug),
# highest first; a level between two takes the priority of the one below it.
SYSLOG_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                     (logging.INFO, 6), (logging.NOTSET, 7))

# gunicorn.glogging.CONFIG_DEFAULTS: what logconfig_dict and logconfig_json are laid over.
GUNICORN_DEFAULTS: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": True},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic",
                    "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic",
                          "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                    "datefmt": "[%Y-%m-%d %H:%M:%S %z]", "class": "logging.Formatter"},
    },
}

# our handlers, by logger name, removed again by the next setup_logging (a reload)
_installed: list[tuple[str, logging.Handler]] = []
_captured: list[str] = []  # the error log file that fds 1 and 2 point at (--capture-output)


class JournalFormatter(logging.Formatter):
    """No timestamp; a `<N>` syslog priority at the start of every line."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        priority = next(p for level, p in SYSLOG_PRIORITIES if record.levelno >= level)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def setup_logging(cfg: Config) -> logging.Logger:
    """Configure the error and access loggers from cfg (again on every reload); return the
    error logger. Raises ConfigError (check_logging reports the same errors without applying)."""
    for name, handler in _installed:
        logging.getLogger(name).removeHandler(handler)
        handler.close()
    _installed.clear()
    for name in (*ERROR_LOGGERS, *ACCESS_LOGGERS):
        logger = logging.getLogger(name)
        logger.handlers.clear()  # a previous dictConfig's too (not closed: root may share them)
        logger.setLevel(logging.NOTSET)  # as if we had never touched them: a dictConfig decides
        logger.propagate = True
    _capture_output(cfg)
    found = logging_config(cfg)
    if found is not None:
        _apply_config(*found)
    else:
        _install_error_log(cfg)
    if cfg.syslog:
        for name in ERROR_LOGGERS:
            _install(name, _syslog_handler(cfg, "error"))
        if not cfg.disable_redirect_access_to_syslog:
            for name in ACCESS_LOGGERS:
                _install(name, _syslog_handler(cfg, "access"))
    statsd = StatsdSocket.from_config(cfg)
    if statsd is not None:
        _install(ERROR_LOGGER, LogLevelCounter(statsd))
    return logging.getLogger(ERROR_LOGGER)


def check_logging(cfg: Config) -> None:
    """Raise the ConfigError setup_logging would, without touching this process's logging:
    the dictionary (or .ini file) is read here and applied in a short-lived child process (a
    dictConfig or fileConfig cannot be tried and undone). For --check-config and before a
    reload is committed."""
    found = logging_config(cfg)
    if cfg.syslog:
        _syslog_handler(cfg, "error").close()
    if found is None:
        return
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 0
        try:
            _apply_config(*found)
        except Exception as exc:  # whatever it is, the parent reports it in one line
            os.write(write_end, (str(exc) or type(exc).__name__).encode("utf-8", "replace"))
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode("utf-8", "replace")
    os.waitpid(pid, 0)
    if message:
        raise ConfigError(message)


def access_logger() -> logging.Logger | None:
    """The access logger when the logging config gave it handlers of its own (and it logs
    INFO), else None: then access lines go only to the access log's own fast writer."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if logger.handlers and not logger.disabled and logger.isEnabledFor(logging.INFO):
        return logger
    return None


def logging_settings(cfg: Config) -> tuple[Any, ...]:
    """Everything setup_logging reads: when it differs after a reload, call it again."""
    return (cfg.errorlog, cfg.loglevel, cfg.logconfig, cfg.logconfig_dict, cfg.logconfig_json,
            cfg.syslog, cfg.syslog_addr, cfg.syslog_prefix, cfg.syslog_facility,
            cfg.disable_redirect_access_to_syslog, cfg.capture_output, cfg.statsd_host,
            cfg.statsd_prefix, cfg.dogstatsd_tags, cfg.proc_name, cfg.app)


def logging_config(cfg: Config) -> tuple[str, dict[str, Any] | configparser.RawConfigParser] | None:
    """The logging config cfg asks for, with the setting it came from, or None: a dictConfig
    dictionary (logging_dict) or, for an `.ini` --log-config, the parsed fileConfig file.
    Raises ConfigError for a file that cannot be read or parsed."""
    if cfg.logconfig and not cfg.logconfig_dict and not cfg.logconfig_json \
            and cfg.logconfig.endswith(INI_SUFFIXES):
        return f"--log-config {cfg.logconfig}", _read_file_config(cfg.logconfig)
    return logging_dict(cfg)


def logging_dict(cfg: Config) -> tuple[str, dict[str, Any]] | None:
    """The dictConfig dictionary cfg asks for, with the setting it came from, or None (an
    `.ini` --log-config is not one, see logging_config). gunicorn's precedence: logconfig_dict,
    then logconfig_json, then --log-config."""
    if cfg.logconfig_dict:
        return "logconfig_dict", {**_copy(GUNICORN_DEFAULTS), **_copy(cfg.logconfig_dict)}
    if cfg.logconfig_json:
        config = _read_dict_config(cfg.logconfig_json, "--log-config-json", toml=False)
        return f"--log-config-json {cfg.logconfig_json}", {**_copy(GUNICORN_DEFAULTS), **config}
    if cfg.logconfig and not cfg.logconfig.endswith(INI_SUFFIXES):
        config = _read_dict_config(cfg.logconfig, "--log-config",
                                   toml=cfg.logconfig.endswith(".toml"))
        config.setdefault("disable_existing_loggers", False)
        return f"--log-config {cfg.logconfig}", config
    return None


def _install_error_log(cfg: Config) -> None:
    """Our own error log: stderr (journal-aware) or a file, on both error logger names."""
    if cfg.errorlog == STDERR:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        formatter = JournalFormatter() if stderr_is_journal() else logging.Formatter(LOG_FORMAT,
                                                                                     DATE_FORMAT)
    else:
        handler = _open_file(cfg.errorlog)
        formatter = logging.Formatter(LOG_FORMAT, DATE_FORMAT)
    handler.setFormatter(formatter)
    for name in ERROR_LOGGERS:
        logger = logging.getLogger(name)
        _install(name, handler)
        logger.setLevel(cfg.loglevel.upper())
        logger.propagate = False  # the application's root handlers must not repeat our lines
    for name in ACCESS_LOGGERS:  # access lines reach handlers only when the user asks so
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _install(name: str, handler: logging.Handler) -> None:
    logging.getLogger(name).addHandler(handler)
    _installed.append((name, handler))


def _syslog_handler(cfg: Config, which: str) -> logging.handlers.SysLogHandler:
    """gunicorn's syslog lines: tagged `gunicorn.PREFIX.error` (or .access), then the pid."""
    prefix = (cfg.syslog_prefix or cfg.proc_name or cfg.app or "prefork").replace(":", ".")
    socktype, address = _syslog_target(cfg.syslog_addr)
    facility = logging.handlers.SysLogHandler.facility_names[cfg.syslog_facility]
    try:
        handler = logging.handlers.SysLogHandler(address, facility, socktype)
    except OSError as exc:
        raise ConfigError(f"--log-syslog-to: cannot reach {cfg.syslog_addr!r}: "
                          f"{exc.strerror or exc}") from None
    tag = f"gunicorn.{prefix}.{which}".replace("%", "%%")
    handler.setFormatter(logging.Formatter(f"{tag}: [%(process)d] %(message)s"))
    return handler


def _syslog_target(address: str) -> tuple[socket.SocketKind | None, str | tuple[str, int]]:
    """(socket type, address) for SysLogHandler, from the forms settings.syslog_address
    accepts. A unix socket without #dgram/#stream gets None: SysLogHandler tries both."""
    scheme, _, rest = address.partition("://")
    if scheme == "unix":
        path, _, kind = rest.partition("#")
        return {"dgram": socket.SOCK_DGRAM, "stream": socket.SOCK_STREAM}.get(kind), path
    host, _, port = with_default_port(rest, SYSLOG_PORT).rpartition(":")
    kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
    return kind, (host.strip("[]"), int(port))


def _capture_output(cfg: Config) -> None:
    """--capture-output: fds 1 and 2, which the workers inherit, append to the error log file
    (gunicorn does this only when the error log is a file; so do we)."""
    _captured.clear()
    if cfg.capture_output and cfg.errorlog != STDERR:
        _captured.append(cfg.errorlog)
        _point_output_at(cfg.errorlog)


def _point_output_at(path: str) -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(f"--capture-output: cannot open {path!r}: {exc.strerror}") from None
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _copy(value: Any) -> Any:
    """A copy of the dicts and lists in a dictConfig dictionary, which dictConfig consumes as it
    goes; other values (a stream, a factory) are shared, since they may not be copyable."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


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
    for path in _captured:
        _point_output_at(path)


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


def _apply_config(label: str, config: dict[str, Any] | configparser.RawConfigParser) -> None:
    if isinstance(config, dict):
        _apply_dict_config(label, config)
    else:
        _apply_file_config(label, config)


def _apply_dict_config(label: str, config: dict[str, Any]) -> None:
    loggers = config.get("loggers")
    if isinstance(loggers, dict):
        for theirs, ours in GUNICORN_LOGGERS.items():
            if theirs in loggers and ours not in loggers:
                loggers[ours] = _copy(loggers[theirs])
    try:
        logging.config.dictConfig(config)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"{label}: {exc}{cause}".replace("\n", " ")) from exc


def _apply_file_config(label: str, parser: configparser.RawConfigParser) -> None:
    """gunicorn's --log-config: a logging.fileConfig file, a logger for gunicorn's names
    configuring ours as well (a copy of its section under our qualname)."""
    _add_our_loggers(parser)
    try:
        logging.config.fileConfig(parser, disable_existing_loggers=False)
    except Exception as exc:  # fileConfig evaluates the file's handler args: anything can fail
        raise ConfigError(f"{label}: {type(exc).__name__}: {exc}".replace("\n", " ")) from exc


def _add_our_loggers(parser: configparser.RawConfigParser) -> None:
    """For each [logger_KEY] whose qualname is gunicorn.error / gunicorn.access, one more
    logger with the same options for prefork.error / prefork.access, unless the file has one.
    A file fileConfig would reject is left as it is, for fileConfig to say why."""
    if not parser.has_option("loggers", "keys"):
        return
    keys = [key.strip() for key in parser.get("loggers", "keys", raw=True).split(",")]
    qualnames = {parser.get(f"logger_{key}", "qualname", raw=True, fallback=None) for key in keys}
    for key in list(keys):
        theirs = parser.get(f"logger_{key}", "qualname", raw=True, fallback=None)
        ours = GUNICORN_LOGGERS.get(theirs or "")
        if ours is None or ours in qualnames:
            continue
        new_key = ours
        while parser.has_section(f"logger_{new_key}") or new_key in keys:
            new_key += "_"
        parser.add_section(f"logger_{new_key}")
        for option, value in parser.items(f"logger_{key}", raw=True):
            parser.set(f"logger_{new_key}", option, value)
        parser.set(f"logger_{new_key}", "qualname", ours)
        keys.append(new_key)
        qualnames.add(ours)
    parser.set("loggers", "keys", ",".join(keys))


def _read_file_config(path: str) -> configparser.RawConfigParser:
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file)
    except OSError as exc:
        raise ConfigError(f"--log-config: cannot read {path!r}: {exc.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"--log-config {path}: {exc}".replace("\n", " ")) from None
    return parser


def _read_dict_config(path: str, setting: str, toml: bool) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path!r}: {exc.strerror}") from None
    try:
        config = tomllib.loads(data.decode("utf-8")) if toml else json.loads(data)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{setting} {path}: line {exc.lineno}: {exc.msg}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{setting} {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{setting} {path}: must hold a dictConfig dictionary, "
                          f"got {type(config).__name__}")
    return config
