"""Every gunicorn setting, and what prefork makes of it: the one list of gunicorn names.

Why a table: a gunicorn user brings a config file, flags and environment written for gunicorn.
Each name they may use is either a prefork setting (found in the settings table by
`settings.lookup`, so a setting added there is "supported" here at once) or one of the entries
below, which says what prefork does instead. The same entries decide what loading a gunicorn
Python config file does with a name prefork lacks (`files.py`) and generate the tables of
docs/from-gunicorn.md (`scripts/update_readme.py`), so the code and the page cannot disagree. The command line
(`cli.py`) accepts every gunicorn flag in the table as well, and judges the ones prefork lacks
exactly as a config file's names: a gunicorn user's command line is their first try.

An unsupported setting is *refused* (an error; `--check-config` exits 1) when ignoring it would
change what the application sees or how it runs (another worker model, a PasteDeploy app,
daemon mode, other proxy headers, leniency the parser does not have); otherwise it only tunes
something prefork does its own way and gets one warning. Values listed as `harmless` describe
what prefork does anyway (`worker_class = "sync"`, `header_map = "drop"`): no message at all.

Source: gunicorn's settings reference (gunicorn/config.py) of gunicorn 27.0.1, all 120
settings, in its sections and order (the dirty arbiters' hooks under "Dirty Arbiters").
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from typing import Any

from .logsetup import ERROR_LOGGER
from .settings import BY_NAME, ConfigError, lookup, spec

log = logging.getLogger(ERROR_LOGGER)


@dataclass(frozen=True)
class GunicornSetting:
    """One gunicorn setting, as a gunicorn user would write it."""

    name: str
    flags: tuple[str, ...] = ()
    #: When prefork has the setting: how it differs from gunicorn's ("" = its help line).
    note: str = ""
    #: When prefork lacks it: what prefork does instead, or what to do. Two fields, so that
    #: a setting added to prefork later is described by `note`, never by a stale `instead`.
    instead: str = ""
    refused: bool = False
    harmless: tuple[Any, ...] = ()
    #: What the flag sets when it takes no value (gunicorn's store_true and store_const
    #: flags: `--daemon` sets True, `--no-sendfile` False); None for a flag with a value.
    flag_value: bool | None = None
    #: The prefork setting and value that a true value asks for (`control_socket_disable =
    #: True` is `control_socket = "off"`): set, silently, rather than judged.
    means: tuple[str, Any] | None = None

    @property
    def prefork_name(self) -> str | None:
        """The prefork setting of the same config-file name, or None."""
        return lookup(self.name)

    def is_harmless(self, value: Any) -> bool:
        """True for a value that asks for what prefork does anyway."""
        return any(_same(value, harmless) for harmless in self.harmless)


def judge(entry: GunicornSetting, value: Any, refusal: str, warning: str) -> dict[str, Any]:
    """One use of a gunicorn setting prefork lacks, from a config file or a flag: nothing for
    a harmless value, a ConfigError for a refused setting, else one warning. `refusal` and
    `warning` say where and how it was given; each message starts with it. Returns the
    prefork settings the use amounts to (`means`, for a true value), else {}."""
    if entry.means is not None and _same(value, True):
        return dict([entry.means])
    if entry.is_harmless(value):
        return {}
    if entry.refused:
        raise ConfigError(f"{refusal} is refused by prefork: {entry.instead}")
    log.warning("%s is not supported by prefork; ignored (%s)", warning, entry.instead)
    return {}


def _same(given: Any, harmless: Any) -> bool:
    """Equal after _normalized. A string given where a number is harmless is read as gunicorn
    reads a flag's number (`--dirty-workers 0`, `--control-socket-mode 0600`)."""
    if isinstance(given, str) and type(harmless) is int:
        given = _integer(given)
    given, harmless = _normalized(given), _normalized(harmless)
    return given == harmless and type(given) is type(harmless)


def _integer(text: str) -> int | str:
    """gunicorn's int / auto_int flag types: `384`, `0o600`, `0x180`, and `0600` as octal;
    the text itself when it is no number."""
    text = text.strip()
    try:
        return int(text, 8) if re.fullmatch(r"0[0-7]+", text) else int(text, 0)
    except ValueError:
        return text


def _normalized(value: Any) -> Any:
    """Strings compare case-insensitively, a list of strings as its comma-joined form, a class
    as its dotted name (`worker_class = SyncWorker` is "gunicorn.workers.sync.SyncWorker"),
    an integer enum as its number (`ssl_version = ssl.PROTOCOL_TLS` is 2); the type stays
    part of the comparison (daemon = 0 is not daemon = False)."""
    if isinstance(value, enum.IntEnum):
        value = int(value)
    if isinstance(value, type):
        value = f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        value = ",".join(item.strip() for item in value)
    return value.strip().lower() if isinstance(value, str) else value


def _s(name: str, *flags: str, note: str = "", instead: str = "", refused: bool = False,
       harmless: tuple[Any, ...] = (), flag_value: bool | None = None,
       means: tuple[str, Any] | None = None) -> GunicornSetting:
    return GunicornSetting(name, flags, note, instead, refused, harmless, flag_value, means)



_NO_DIRTY = "prefork has no pool of non-HTTP workers; run long jobs in a task queue."
_HTTP2 = "prefork speaks HTTP/1.0 and 1.1; terminate HTTP/2 in the reverse proxy."
_WSGI_ONLY = "prefork serves WSGI only (an ASGI worker class is refused)."
#: gunicorn's default, which prefork honours (workers/proxy.py): a file may spell it out.
_SECURE_SCHEME_HEADERS = {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https",
                          "X-FORWARDED-SSL": "on"}

SECTIONS: dict[str, tuple[GunicornSetting, ...]] = {
    "Config File": (
        _s("config", "-c", "--config",
           note="A path to a Python or TOML file, `file:PATH`, or `python:MODULE` (imported by "
                "name, afresh on each HUP). Without -c: ./prefork.conf.py, else [tool.prefork] "
                "in ./pyproject.toml, else gunicorn's ./gunicorn.conf.py (loaded with a "
                "warning)."),
        _s("wsgi_app", note="Same: an alias of APP."),
    ),
    "Server Socket": (
        _s("bind", "-b", "--bind",
           note="Same forms (`HOST:PORT`, `[v6]:PORT`, `unix:PATH`, `fd://N`) and default "
                "(`127.0.0.1:8000`, or `0.0.0.0:$PORT`); systemd socket activation is adopted."),
        _s("backlog", "--backlog", note="Same."),
    ),
    "Worker Processes": (
        _s("workers", "-w", "--workers",
           note="Same, `$WEB_CONCURRENCY` included; prefork also takes `auto`: one worker per CPU "
                "the cgroup quota and the affinity mask allow."),
        _s("worker_class", "-k", "--worker-class", refused=True,
           harmless=("sync", "gthread", "egg:gunicorn#sync", "egg:gunicorn#gthread",
                     "gunicorn.workers.sync.SyncWorker", "gunicorn.workers.gthread.ThreadWorker"),
           instead="One worker model: an epoll loop that reads requests without blocking and runs "
                "the app synchronously, with --threads for I/O-bound apps. `sync` and `gthread` "
                "describe it and are accepted; any other class (gevent, eventlet, uvicorn, asgi, "
                "tornado) is refused: the app would run without the concurrency it was written for."),
        _s("threads", "--threads", note="Same meaning (gunicorn switches to `gthread` above 1)."),
        _s("worker_connections", "--worker-connections",
           note="Caps the client connections one worker holds, for every worker (gunicorn: the "
                "async and gthread workers, default 1000); prefork's default 0 takes the cap "
                "from the open-file limit."),
        _s("max_requests", "--max-requests",
           note="Same. --max-worker-memory recycles by memory instead."),
        _s("max_requests_jitter", "--max-requests-jitter", note="Same."),
        _s("timeout", "-t", "--timeout",
           note="Same: a worker silent for longer gets SIGABRT (its stack goes to the error "
                "log), then SIGKILL."),
        _s("graceful_timeout", "--graceful-timeout", note="Same."),
        _s("keepalive", "--keep-alive",
           note="Same meaning; default 5 (gunicorn: 2), honoured by every worker."),
    ),
    "Security": (
        _s("limit_request_line", "--limit-request-line",
           note="Same default (4094) and status (414). `0` (gunicorn: unlimited) is accepted "
                "and means a 64 KiB ceiling: a head is always bounded."),
        _s("limit_request_fields", "--limit-request-fields",
           note="Same default (100); too many fields get 431. `0` means a ceiling of 32768."),
        _s("limit_request_field_size", "--limit-request-field_size",
           note="Same default (8190); a larger field gets 431. `0` (gunicorn: unlimited) means "
                "a 64 KiB ceiling."),
    ),
    "Debugging": (
        _s("reload", "--reload",
           note="Same: for development. A change triggers prefork's gap-free reload, so a "
                "syntax error leaves the old workers serving."),
        _s("reload_engine", "--reload-engine",
           note="Same values (`auto`, `poll`, `inotify`); `inotify` uses the watchfiles package "
                "(`pip install prefork[reload]`) rather than gunicorn's `inotify`."),
        _s("reload_extra_files", "--reload-extra-file",
           note="Same, for files given by name: gunicorn's glob patterns are not expanded, "
                "and each file must exist at start."),
        _s("spew", "--spew", flag_value=True, harmless=(False,),
           instead="Use `python -X importtime`, `py-spy` or a debugger."),
        _s("check_config", "--check-config",
           note="Loads the app, the --log-config file and every setting without binding. Exit 0 "
                "when valid, 1 for any problem (as gunicorn), including a gunicorn setting "
                "prefork refuses."),
        _s("print_config", "--print-config",
           note="Prints `name = value` lines that load back with -c to the same configuration. "
                "Unlike gunicorn's it does not load the app."),
    ),
    "Server Mechanics": (
        _s("preload_app", "--preload", note="Same. On HUP a preloaded app is imported again."),
        _s("sendfile", "--no-sendfile", flag_value=False, harmless=(None, True),
           instead="`wsgi.file_wrapper` around a regular file is always sent with sendfile(2)."),
        _s("reuse_port", "--reuse-port", flag_value=True, harmless=(False,),
           instead="Workers share the arbiter's sockets; the kernel wakes one per connection "
                "(EPOLLEXCLUSIVE)."),
        _s("chdir", "--chdir",
           note="Same; the directory also goes on `sys.path`, behind the --pythonpath entries."),
        _s("daemon", "-D", "--daemon", flag_value=True, refused=True, harmless=(False,),
           instead="Refused: prefork never daemonizes. Run it under systemd (units in `systemd/`) "
                "or another supervisor."),
        _s("raw_env", "-e", "--env",
           note="Same: `KEY=VALUE`, repeatable, put into the environment before the app loads "
                "(again on HUP)."),
        _s("pidfile", "-p", "--pid", note="Same."),
        _s("worker_tmp_dir", "--worker-tmp-dir",
           note="Another use: gunicorn keeps its heartbeat files there; prefork's heartbeats live "
                "in shared memory, and this directory holds the spool files of request bodies and "
                "responses too large for memory."),
        _s("user", "-u", "--user",
           note="Same; the arbiter keeps its privileges, each worker drops them after fork."),
        _s("group", "-g", "--group", note="Same."),
        _s("umask", "-m", "--umask",
           note="`0o22`, `022` and `18` all mean octal 22. gunicorn applies it only while it "
                "creates unix sockets (default 0: a 0777 socket); prefork applies -m to the "
                "arbiter and the workers, app files included (so gunicorn's default 0 gets a "
                "warning: any user could write them), and without -m keeps the inherited "
                "umask (systemd's UMask=)."),
        _s("initgroups", "--initgroups", flag_value=True, harmless=(True,),
           instead="Always done: with --user, the workers get that user's supplementary groups."),
        _s("tmp_upload_dir", harmless=(None,),
           instead="prefork has no upload directory setting; nothing of gunicorn's temporary "
                "upload files applies."),
        _s("secure_scheme_headers", refused=True, harmless=(_SECURE_SCHEME_HEADERS,),
           instead="Refused unless gunicorn's default: the scheme headers are fixed "
                "(`X-Forwarded-Proto`, `X-Forwarded-Ssl: on`, `X-Forwarded-Protocol: ssl`, "
                "`Forwarded: proto=`, from --forwarded-allow-ips peers); other ones would give "
                "the app another `wsgi.url_scheme`."),
        _s("forwarded_allow_ips", "--forwarded-allow-ips",
           note="Same values and default (also from `$FORWARDED_ALLOW_IPS`). Also sets "
                "`REMOTE_ADDR` from `X-Forwarded-For` / `Forwarded` (see above)."),
        _s("pythonpath", "--pythonpath",
           note="Same, order included: ahead of the --chdir directory, the last entry first."),
        _s("paste", "--paste", "--paster", refused=True, harmless=(None,),
           instead="Refused: no PasteDeploy. Build the app in a module and name it as APP."),
        _s("proxy_protocol", "--proxy-protocol",
           note="Same values, the flag's optional MODE included (`--proxy-protocol v2 APP`). "
                "Versions 1 and 2 are both recognised, so `v1`, `v2`, `auto` and the flag alone "
                "mean on, `off` means off."),
        _s("proxy_allow_ips", "--proxy-allow-from", note="Same."),
        _s("protocol", "--protocol", refused=True, harmless=("http",),
           instead="Refused unless `http`: nginx must use `proxy_pass`, not `uwsgi_pass`."),
        _s("uwsgi_allow_ips", "--uwsgi-allow-from", harmless=("127.0.0.1,::1",), instead="No uwsgi protocol (see `protocol`)."),
        _s("raw_paste_global_conf", "--paste-global", refused=True, harmless=([],),
           instead="Refused: no PasteDeploy."),
        _s("permit_obsolete_folding", "--permit-obsolete-folding", flag_value=True, refused=True,
           harmless=(False,),
           instead="Refused when true: obsolete line folding is always a 400."),
        _s("strip_header_spaces", "--strip-header-spaces", flag_value=True, refused=True,
           harmless=(False,),
           instead="Refused when true: a space before the colon is always a 400."),
        _s("permit_unconventional_http_method", "--permit-unconventional-http-method",
           flag_value=True, harmless=(True, False),
           instead="Not needed: any method that is an RFC 9110 token is passed to the app as sent."),
        _s("permit_unconventional_http_version", "--permit-unconventional-http-version",
           flag_value=True, refused=True, harmless=(False,),
           instead="Refused when true: only HTTP/1.0 and 1.1; other versions get 505."),
        _s("casefold_http_method", "--casefold-http-method", flag_value=True, refused=True,
           harmless=(False,),
           instead="Refused when true: methods are case-sensitive and passed as sent."),
        _s("forwarder_headers", "--forwarder-headers", refused=True,
           harmless=("SCRIPT_NAME,PATH_INFO",),
           instead="Refused unless gunicorn's default: `SCRIPT_NAME` comes from --root-path; "
                "`PATH_INFO` and `REMOTE_USER` never come from headers."),
        _s("header_map", "--header-map", refused=True, harmless=("drop",),
           instead="Refused unless `drop`, gunicorn's default and prefork's only behaviour: names "
                "with `_` never reach the environ."),
        _s("root_path", "--root-path",
           note="gunicorn uses it for ASGI only; prefork sets WSGI `SCRIPT_NAME` from it and "
                "strips it from `PATH_INFO`. Without it, `SCRIPT_NAME` in the environment (or "
                "`-e SCRIPT_NAME=...`) is the root path, as gunicorn's WSGI worker reads it; a "
                "path outside the prefix reaches the app whole (gunicorn fails the request)."),
    ),
    "Logging": (
        _s("accesslog", "--access-logfile",
           note="Same; `-` is stdout; off by default. Lines are written in batches, at least "
                "once a second. --access-log-json writes JSON lines instead."),
        _s("disable_redirect_access_to_syslog", "--disable-redirect-access-to-syslog"),
        _s("access_log_format", "--access-logformat",
           note="Same atoms (`h l u t r m U q H s B b f a T M D L p`, `{header}i`, "
                "`{header}o`, `{key}e`) and the same default; `b` is `0` for an empty body, as "
                "in gunicorn. Escaping is Apache's: gunicorn escapes only `\"`, prefork also "
                "writes `\\` as `\\\\` and control characters as `\\xHH`, so a header "
                "value cannot forge a log line."),
        _s("errorlog", "--error-logfile", "--log-file",
           note="Same; `-` is stderr. Under systemd, lines carry a journal priority prefix "
                "instead of a timestamp."),
        _s("loglevel", "--log-level", note="Same levels, case-insensitive."),
        _s("capture_output", "--capture-output"),
        _s("logger_class", "--logger-class", harmless=("gunicorn.glogging.Logger",),
           instead="Configure the `prefork.error` logger with a logging config (--log-config, "
                "logconfig_dict)."),
        _s("logconfig", "--log-config",
           note="A dictConfig as JSON or TOML, or gunicorn's `fileConfig` `.ini` file; its "
                "`gunicorn.error` / `gunicorn.access` loggers configure `prefork.error` / "
                "`prefork.access` too. --check-config loads it."),
        _s("logconfig_dict"),
        _s("logconfig_json", "--log-config-json"),
        _s("syslog_addr", "--log-syslog-to"),
        _s("syslog", "--log-syslog",
           note="Same, with gunicorn's tags (`gunicorn.PREFIX.error`, `gunicorn.PREFIX.access`), "
                "so existing syslog rules keep matching."),
        _s("syslog_prefix", "--log-syslog-prefix"),
        _s("syslog_facility", "--log-syslog-facility"),
        _s("enable_stdio_inheritance", "-R", "--enable-stdio-inheritance", flag_value=True,
           harmless=(True, False),
           instead="prefork never daemonizes, so stdio is always inherited (gunicorn, too, "
                   "redirects it only with --daemon)."),
        _s("statsd_host", "--statsd-host",
           note="Same metric names and types; a worker sends what one turn of its loop served in "
                "one datagram (gunicorn: one per metric). --metrics-bind serves Prometheus "
                "metrics as well."),
        _s("dogstatsd_tags", "--dogstatsd-tags"),
        _s("statsd_prefix", "--statsd-prefix"),
        _s("enable_backlog_metric", "--enable-backlog-metric",
           note="The same number (a TCP listener's accept queue, from `TCP_INFO`), exported as "
                "the Prometheus gauge `prefork_listen_queue_depth` at `--metrics-bind` rather "
                "than as gunicorn's statsd `gunicorn.backlog`."),
    ),
    "Process Naming": (
        _s("proc_name", "-n", "--name",
           note="Same: `prefork: arbiter [NAME]`, `prefork: worker N [NAME]`."),
        _s("default_proc_name", harmless=("gunicorn",),
           instead="Internal to gunicorn; prefork shows APP when no name is set."),
    ),
    "SSL": (
        _s("keyfile", "--keyfile", note="Same."),
        _s("certfile", "--certfile", note="Same."),
        _s("ssl_version", "--ssl-version", harmless=(2,),
           instead="Deprecated and ignored by gunicorn too; prefork allows TLS 1.2 and newer."),
        _s("cert_reqs", "--cert-reqs",
           note="Same numbers (0, 1, 2); names such as `CERT_REQUIRED` work too."),
        _s("ca_certs", "--ca-certs", note="Same."),
        _s("suppress_ragged_eofs", "--suppress-ragged-eofs", flag_value=True, harmless=(True,),
           instead="A client that drops the connection without close_notify ends that connection only."),
        _s("do_handshake_on_connect", "--do-handshake-on-connect", flag_value=True,
           harmless=(False,),
           instead="The handshake always runs in the worker's event loop, bounded by --head-timeout."),
        _s("ciphers", "--ciphers", note="Same."),
    ),
    "Server Hooks": (
        _s("on_starting", note="Same `(server)`, in the arbiter before the workers start."),
        _s("on_reload", note="Same `(server)`, when a HUP reload begins."),
        _s("when_ready", note="Same `(server)`, once the first workers serve."),
        _s("pre_fork", note="Same `(server, worker)`."),
        _s("post_fork", note="Same `(server, worker)`, in the new worker before it loads the app."),
        _s("post_worker_init", note="Same `(worker)`, after the app is loaded."),
        _s("worker_int",
           note="Same `(worker)`, in the worker's INT/QUIT handler (a fast stop), before it exits."),
        _s("worker_abort",
           note="Same `(worker)`, when a worker's heartbeat timed out (SIGABRT): after its stack "
                "is written to the error log, then it dies of SIGABRT. Like gunicorn's, it cannot "
                "run in a worker stuck inside a C call; that one is killed after 3 s."),
        _s("pre_exec",
           note="Same `(server)`, in the forked child just before USR2 execs the new arbiter; "
                "environment variables it sets are inherited."),
        _s("pre_request",
           note="Same `(worker, req)`; `req.method`, `req.path`, `req.query`, `req.headers`."),
        _s("post_request",
           note="Same `(worker, req, environ, resp)`; the two- and three-argument forms work too."),
        _s("child_exit",
           note="Same `(server, worker)`, in the arbiter after it reaped any worker (SIGKILL "
                "included): the place for `mark_process_dead(worker.pid)`. `worker.pid`, "
                "`worker.age` and `worker.log` are there."),
        _s("worker_exit", note="Same `(server, worker)`, in the worker process as it exits."),
        _s("nworkers_changed",
           note="Same `(server, new_value, old_value)`: at start (`old_value` None), on TTIN/TTOU, "
                "and when a reload commits a different `-w`. gunicorn also calls it on a reload "
                "that keeps the count, and on TTOU at 1 worker does nothing; prefork calls it "
                "only when the number changes."),
        _s("on_exit", note="Same `(server)`, just before prefork exits."),
        _s("ssl_context",
           note="Same `(config, default_ssl_context_factory)`, returning an `ssl.SSLContext`: "
                "called once in each worker as it starts (and once in the arbiter to check it), "
                "not per connection. A hook that raises or returns something else stops prefork "
                "at start with one line."),
    ),
    "HTTP/2": (
        _s("http_protocols", "--http-protocols", refused=True, harmless=("h1",),
           instead=f"Refused unless `h1`: {_HTTP2}"),
        _s("http2_cleartext", "--http2-cleartext", refused=True, harmless=("off", False),
           instead=f"Refused unless off: {_HTTP2}"),
        _s("http2_max_concurrent_streams", "--http2-max-concurrent-streams", harmless=(100,),
           instead=_HTTP2),
        _s("http2_initial_window_size", "--http2-initial-window-size", harmless=(65535,),
           instead=_HTTP2),
        _s("http2_max_frame_size", "--http2-max-frame-size", harmless=(16384,), instead=_HTTP2),
        _s("http2_max_header_list_size", "--http2-max-header-list-size", harmless=(65536,),
           instead=_HTTP2),
    ),
    "Worker Processes (ASGI and parser)": (
        _s("asgi_loop", "--asgi-loop", harmless=("auto",), instead=_WSGI_ONLY),
        _s("asgi_lifespan", "--asgi-lifespan", harmless=("auto",), instead=_WSGI_ONLY),
        _s("asgi_disconnect_grace_period", "--asgi-disconnect-grace-period", harmless=(3,),
           instead=_WSGI_ONLY),
        _s("websocket_max_message_size", "--websocket-max-message-size", harmless=(16777216,),
           instead=f"{_WSGI_ONLY} A WSGI app that takes over an upgraded connection frames "
                   "its WebSocket messages itself."),
        _s("http_parser", "--http-parser", harmless=("auto",), instead="One strict parser, in Python."),
    ),
    "Dirty Arbiters": (
        _s("dirty_apps", "--dirty-app", refused=True, harmless=([],),
           instead=f"Refused: the app would call dirty workers that do not exist. {_NO_DIRTY}"),
        _s("dirty_workers", "--dirty-workers", harmless=(0,), instead=_NO_DIRTY),
        _s("dirty_timeout", "--dirty-timeout", harmless=(300,), instead=_NO_DIRTY),
        _s("dirty_threads", "--dirty-threads", harmless=(1,), instead=_NO_DIRTY),
        _s("dirty_graceful_timeout", "--dirty-graceful-timeout", harmless=(30,),
           instead=_NO_DIRTY),
        _s("on_dirty_starting", instead=_NO_DIRTY),
        _s("dirty_post_fork", instead=_NO_DIRTY),
        _s("dirty_worker_init", instead=_NO_DIRTY),
        _s("dirty_worker_exit", instead=_NO_DIRTY),
    ),
    "Control": (
        _s("control_socket", "--control-socket",
           note="Same flag. Default `auto`: `$RUNTIME_DIRECTORY/control.sock`, else beside the "
                "pidfile, else `/tmp/prefork-PID.ctl`; `prefork status` / `prefork ctl` use it."),
        _s("control_socket_mode", "--control-socket-mode", harmless=(0o600,),
           instead="The socket is always 0600 (owner and root only)."),
        _s("control_socket_disable", "--no-control-socket", flag_value=True, harmless=(False,),
           means=("control_socket", "off"), instead="True is `--control-socket off`."),
    ),
}

GUNICORN: dict[str, GunicornSetting] = {s.name: s for entries in SECTIONS.values() for s in entries}


def unsupported(name: str) -> GunicornSetting | None:
    """The entry for a gunicorn name that is not a prefork setting, else None."""
    entry = GUNICORN.get(name)
    return entry if entry is not None and entry.prefork_name is None else None


# --- docs/from-gunicorn.md ----------------------------------------------------------------------

def gunicorn_markdown() -> str:
    """The per-section tables: gunicorn name and flags, the prefork setting, the notes."""
    parts = []
    for section, entries in SECTIONS.items():
        rows = ["| gunicorn | gunicorn flag | prefork | Notes |", "| --- | --- | --- | --- |"]
        for entry in entries:
            flags = ", ".join(f"`{flag}`" for flag in entry.flags) or "—"
            rows.append(f"| `{entry.name}` | {flags} | {_prefork_cell(entry)} | "
                        f"{_note_cell(entry)} |")
        parts.append(f"### {section}\n\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


def prefork_only_markdown() -> str:
    """prefork's settings that no gunicorn name maps to (hooks left out)."""
    known = {lookup(name) for name in GUNICORN}
    rows = ["| prefork flag | Setting | What for |", "| --- | --- | --- |"]
    for f in BY_NAME.values():
        info = spec(f)
        if f.name in known or not info.flags:
            continue
        rows.append(f"| {', '.join(f'`{flag}`' for flag in info.flags)} | `{f.name}` | {info.short} |")
    return "\n".join(rows) + "\n"


def _prefork_cell(entry: GunicornSetting) -> str:
    name = entry.prefork_name
    if entry.means is not None:
        return f"`{entry.means[0]} = {entry.means[1]!r}` when true"
    if name is None:
        return "**refused** (error)" if entry.refused else "not supported (warning)"
    flags = spec(BY_NAME[name]).flags
    return f"`{name}`" + (f" ({', '.join(f'`{flag}`' for flag in flags)})" if flags else "")


def _note_cell(entry: GunicornSetting) -> str:
    name = entry.prefork_name
    if name is not None:
        note = entry.note or spec(BY_NAME[name]).short  # or a setting added after this table
    else:
        note = entry.instead
        if entry.harmless:
            values = ", ".join(f"`{value!r}`" for value in entry.harmless)
            note += f" Accepted without a message: {values}."
    return note.replace("|", "\\|")
