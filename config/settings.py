"""The settings table: one `Config` dataclass is the single source of truth.

Every field carries a `Spec` in its metadata: command-line flags, the parser that turns a raw
value (a string from the command line, a typed value from a config file) into the setting's
type, the help text, the environment variable that supplies its default, and its section.
The argparse parser, `--print-config`, the config-file loaders, `make_config` and the settings
reference in the README are all generated from this table (see `cli.py` and `files.py`), so a
setting is added in exactly one place.

Help text convention (as in gunicorn): the first line is the `--help` line, the rest is the
settings-reference paragraph, written as advice.

Parsers raise `ValueError` with a message that ends in the offending value; `validate` prefixes
the label of where the value came from (`--workers`, `prefork.toml: workers`, ...) and raises
`ConfigError`. Nothing here reads the environment or the file system except `account`, which
checks that a user or group exists, and `file_list`, which checks that a file does, so that
`--check-config` catches a typo, and `worker_count`, which resolves `auto` from the cgroup
CPU quota (cpus.py) when the value is read, so --print-config shows the number.
"""

from __future__ import annotations

import difflib
import grp
import inspect
import ipaddress
import math
import os
import pwd
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from .cpus import WorkerCount, cpu_budget

Parser = Callable[[Any], Any]
Hook = Callable[..., Any]

SPEC = "prefork"  # the metadata key holding a field's Spec


class ConfigError(Exception):
    """A bad setting. One line that names the setting and the value, e.g.
    `--workers: must be an integer >= 1, got '0'`; the CLI prints it after `prefork: error: `."""

    #: Set by cli.load_config: the configuration that failed asked for --check-config (from
    #: any layer), so the command exits 1 as a check, not 2 as a usage error.
    check_config = False


@dataclass(frozen=True)
class Spec:
    """Everything the generated surfaces need to know about one setting."""

    flags: tuple[str, ...]
    parse: Parser
    doc: str
    section: str
    action: str  # argparse action: "store", "append", "store_true", "store_false"
    env: str | None = None  # environment variable that replaces the default
    metavar: str | None = None
    default_doc: str | None = None  # the default in words, when the literal would mislead
    aliases: tuple[str, ...] = ()  # other config-file names (gunicorn's `wsgi_app`)
    const: str | None = None  # a flag whose value is optional: what the flag alone means

    @property
    def short(self) -> str:
        """The `--help` line."""
        return self.doc.splitlines()[0]

    @property
    def advice(self) -> str:
        """The settings-reference paragraph, on one line."""
        return " ".join(line.strip() for line in self.doc.splitlines()[1:] if line.strip())


def setting(default: Any, *flags: str, parse: Parser, doc: str, section: str,
            env: str | None = None, metavar: str | None = None, default_doc: str | None = None,
            aliases: tuple[str, ...] = (), const: str | None = None) -> Any:
    """Declare one setting: a dataclass field whose metadata is its Spec.

    The argparse action follows from the default: a list collects a repeatable flag, a bool
    flag flips the default (`--preload` sets True, `--no-server-header` sets False). With
    `const`, the flag takes an optional value and means `const` without one (gunicorn's
    `--proxy-protocol [MODE]`).
    """
    if const is not None:
        action = "store"
    elif isinstance(default, bool):
        action = "store_false" if default else "store_true"
    elif isinstance(default, list):
        action = "append"
    else:
        action = "store"
    info = Spec(flags, parse, doc, section, action, env, metavar, default_doc, aliases, const)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={SPEC: info})
    return field(default=default, metadata={SPEC: info})


def hook_setting(*params: str, doc: str, parse: Parser | None = None,
                 default: Hook | None = None, default_doc: str = "no-op") -> Any:
    """Declare a server hook: config-file only, gunicorn's name and signature, default no-op
    (or ``default``, for a hook whose return value is used)."""
    info = Spec((), parse or hook(*params), doc, HOOKS, "store", metavar=f"({', '.join(params)})",
                default_doc=default_doc)
    return field(default=default or _no_op, metadata={SPEC: info})


def _no_op(*_args: object) -> None:
    """The default for every hook whose return value is not used."""


def _default_ssl_context(_config: Any, default_ssl_context_factory: Callable[[], Any]) -> Any:
    """The ssl_context hook's default, as gunicorn's: the context the TLS settings describe."""
    return default_ssl_context_factory()


def is_default_hook(hook: Hook) -> bool:
    """True for a hook the user did not set: per-request hooks are skipped entirely then."""
    return hook is _no_op


# --- parsers -------------------------------------------------------------------------------------

def integer(minimum: int) -> Parser:
    """Whole numbers >= minimum. A bool or a float in a config file is a mistake, not a number."""
    def parse(value: Any) -> int:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
            number = int(value)
        if number is None or number < minimum:
            raise ValueError(f"must be an integer >= {minimum}, got {value!r}")
        return number
    return parse


def worker_count(value: Any) -> int:
    """An integer >= 1, or `auto`: the CPUs this process may use (cpus.py's rule)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return WorkerCount(cpu_budget())
    try:
        return integer(1)(value)
    except ValueError:
        raise ValueError(f"must be an integer >= 1 or auto, got {value!r}") from None


def request_path(value: Any) -> str | None:
    """A request path (starting with /, no query, no spaces), or empty/None for off."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.startswith("/") and not re.search(r"[?#\s]", value):
        return value
    raise ValueError(f"must be a path starting with '/' (no query string), got {value!r}")


def seconds(value: Any) -> float:
    """A duration; integers are fine (`timeout = 30`)."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise ValueError(f"must be a number of seconds >= 0, got {value!r}")
    return number


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def proxy_protocol_mode(value: Any) -> bool:
    """A boolean, or gunicorn's mode names (24.1+): off (or none) / v1 / v2 / auto. Both
    versions are always recognised, so every mode but off means on."""
    if isinstance(value, str) and value.strip().lower() in ("v1", "v2", "auto"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("off", "none"):
        return False
    try:
        return boolean(value)
    except ValueError:
        raise ValueError(f"must be off, v1, v2 or auto (or true/false), got {value!r}") from None


def boolean(value: Any) -> bool:
    """True/false; strings too, because gunicorn config files and env files carry them."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"must be true or false, got {value!r}")


def choice(*options: str) -> Parser:
    """One of a few words, case-insensitive, stored lowercase."""
    def parse(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
    return parse


def text(value: Any) -> str:
    """A non-empty string."""
    if isinstance(value, str) and value:
        return value
    raise ValueError(f"must be a non-empty string, got {value!r}")


def optional_text(value: Any) -> str | None:
    """A string, or None; an empty string also means None (`--pid ''` turns it off)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    raise ValueError(f"must be a string, got {value!r}")


def comma_list(value: Any) -> str | None:
    """Comma-separated entries, given as one string or as a list of strings (config files)."""
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        value = ",".join(value)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return ",".join(item.strip() for item in value.split(",") if item.strip())
    raise ValueError(f"must be a comma-separated string or a list of strings, got {value!r}")


def address_list(value: Any) -> str:
    """Trusted peers: IP addresses or networks, comma separated; `*` trusts everyone."""
    joined = comma_list(value)
    for item in (joined or "").split(","):
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"must be comma-separated IP addresses or networks (or *), "
                             f"got {value!r}") from None
    return joined or ""


def bind_list(value: Any) -> list[str]:
    """One address or a list of them; the syntax of each is checked by binds.parse_bind."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) and item for item in value):
        return list(value)
    raise ValueError(f"must be an address or a list of addresses, got {value!r}")


def env_list(value: Any) -> list[str]:
    """`KEY=VALUE` entries (gunicorn's raw_env): one string or a list of them. The key is
    checked now, so a missing `=` is a start-up error rather than a variable never set."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"must be KEY=VALUE or a list of them, got {value!r}")
    for item in value:
        key, equals, _ = item.partition("=")
        if not equals or not key or "\0" in item:
            raise ValueError(f"must be KEY=VALUE (a variable name, '=', its value), got {item!r}")
    return list(value)


def env_entries(entries: Iterable[str]) -> dict[str, str]:
    """Checked raw_env entries as variables; of two for one name the later wins, as when they
    are put into os.environ in turn."""
    return dict(entry.partition("=")[::2] for entry in entries)


UMASK_MAX = 0o777


def umask_value(value: Any) -> int | None:
    """Octal the way people write it: `0o22`, `022` (a leading zero means octal, as in gunicorn
    and chmod) or plain decimal `18`. None (or an empty string) keeps the inherited umask."""
    if value is None or value == "":
        return None
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        digits = value.strip()
        if re.fullmatch(r"0[0-7]+", digits):
            number = int(digits, 8)
        elif re.fullmatch(r"0[oO][0-7]+|0[xX][0-9a-fA-F]+|[1-9][0-9]*|0", digits):
            number = int(digits, 0)
    if number is None or not 0 <= number <= UMASK_MAX:
        raise ValueError(f"must be a umask from 0 to 0o777 (e.g. 0o22, 022 or 18), got {value!r}")
    return number


# ssl.CERT_NONE / CERT_OPTIONAL / CERT_REQUIRED, written out so that reading a configuration
# never loads OpenSSL (about 5 MiB in every process of a server that does not use TLS).
_CERT_REQS = {"none": 0, "optional": 1, "required": 2}


def cert_requirement(value: Any) -> int:
    """ssl.CERT_* as a number (gunicorn's form) or by name: 2, "2", "CERT_REQUIRED", "required"."""
    if isinstance(value, int) and not isinstance(value, bool) and value in _CERT_REQS.values():
        return int(value)
    if isinstance(value, str):
        key = value.strip().lower().removeprefix("cert_")
        if key.isdigit() and int(key) in _CERT_REQS.values():
            return int(key)
        if key in _CERT_REQS:
            return int(_CERT_REQS[key])
    raise ValueError(f"must be 0, 1, 2 or CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED, got {value!r}")


def optional_dict(value: Any) -> dict[str, Any] | None:
    """A dictionary (gunicorn's `logconfig_dict`); an empty one means unset, as in gunicorn."""
    if value is None or value == {}:
        return None
    if isinstance(value, dict):
        return value
    raise ValueError(f"must be a dictionary, got {type(value).__name__}")


def any_text(value: Any) -> str:
    """A string, empty allowed (`statsd_prefix = ""`)."""
    if isinstance(value, str):
        return value
    raise ValueError(f"must be a string, got {value!r}")


def file_list(value: Any) -> list[str]:
    """Existing files, one or a list, made absolute: a typo in --reload-extra-file would
    otherwise watch nothing."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"must be a file or a list of files, got {value!r}")
    missing = [item for item in value if not os.path.isfile(item)]
    if missing:
        raise ValueError(f"no such file, got {missing[0]!r}")
    return [os.path.abspath(item) for item in value]  # relative to where prefork starts, not --chdir


STATSD_PORT = 8125  # the statsd convention, and gunicorn's default
SYSLOG_PORT = 514
SYSLOG_SCHEMES = ("udp://", "tcp://", "unix://")
# gunicorn's facility names (glogging.SYSLOG_FACILITIES); logging.handlers knows each of them.
SYSLOG_FACILITIES = ("auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news",
                     "security", "syslog", "user", "uucp", *(f"local{n}" for n in range(8)))


def with_default_port(address: str, port: int) -> str:
    """`host` -> `host:port`, `[::1]` -> `[::1]:port`; an address with a port is unchanged."""
    if address.startswith("unix:") or ":" in address.rpartition("]")[2]:
        return address
    return f"{address or 'localhost'}:{port}"


def statsd_address(value: Any) -> str | None:
    """gunicorn's forms: HOST:PORT, HOST (port 8125), [IPv6]:PORT, unix://PATH or unix:PATH."""
    text = optional_text(value)
    if text is not None:
        _check_address(with_default_port(text, STATSD_PORT), "HOST:PORT or unix://PATH")
    return text


def syslog_address(value: Any) -> str:
    """gunicorn's forms: udp://HOST:PORT, tcp://HOST:PORT (port 514 by default) or
    unix://PATH, optionally with #dgram or #stream."""
    address = text(value)
    scheme = next((s for s in SYSLOG_SCHEMES if address.startswith(s)), None)
    expected = "udp://HOST:PORT, tcp://HOST:PORT or unix://PATH[#dgram|#stream]"
    if scheme is None:
        raise ValueError(f"must be {expected}, got {value!r}")
    rest = address.removeprefix(scheme)
    if scheme == "unix://":
        path, _, kind = rest.partition("#")
        if kind not in ("", "dgram", "stream"):
            raise ValueError(f"the socket type after # must be dgram or stream, got {value!r}")
        _check_address(f"unix:{path}", expected)
    else:
        _check_address(with_default_port(rest, SYSLOG_PORT), expected)
    return address


def _check_address(address: str, expected: str) -> None:
    # binds imports this module (for ConfigError), so it is imported when first needed.
    from .binds import parse_bind

    try:
        parsed = parse_bind(address)
    except ConfigError as exc:
        raise ValueError(f"must be {expected}: {str(exc).partition(': ')[2]}") from None
    if parsed.kind == "fd":
        raise ValueError(f"must be {expected}, got {address!r}")


def url_prefix(value: Any) -> str:
    """SCRIPT_NAME: empty, or a path that starts with / and does not end with one."""
    if isinstance(value, str) and (value == "" or value.startswith("/")):
        return value.rstrip("/")
    raise ValueError(f"must be empty or a path starting with '/', got {value!r}")


def account(kind: str) -> Parser:
    """A user or group, by name or number. Names are looked up now so that --check-config
    reports a typo instead of the arbiter failing after it has bound its sockets."""
    find = pwd.getpwnam if kind == "user" else grp.getgrnam

    def parse(value: Any) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if isinstance(value, str) and re.fullmatch(r"[0-9]+", value):
            return value
        if isinstance(value, str):
            try:
                find(value)
            except KeyError:
                raise ValueError(f"no such {kind}, got {value!r}") from None
            return value
        raise ValueError(f"must be a {kind} name or id, got {value!r}")
    return parse


def accepts(function: Callable[..., Any], count: int) -> bool:
    """Can `function` be called with `count` positional arguments? A callable whose
    signature Python cannot introspect (some builtins) gets the benefit of the doubt."""
    try:
        inspect.signature(function).bind(*range(count))
    except TypeError:
        return False
    except ValueError:
        return True
    return True


def _describe_callable(value: Any) -> str:
    try:
        return f"{getattr(value, '__name__', type(value).__name__)}{inspect.signature(value)}"
    except (TypeError, ValueError):
        return repr(value)


def hook(*params: str) -> Parser:
    """A callable taking exactly the hook's arguments (checked now, not when it first fires)."""
    def parse(value: Any) -> Hook:
        if callable(value) and accepts(value, len(params)):
            return value
        got = _describe_callable(value) if callable(value) else repr(value)
        raise ValueError(f"must be a function taking ({', '.join(params)}), got {got}")
    return parse


def post_request_hook(value: Any) -> Hook:
    """gunicorn also accepts post_request(worker, req) and (worker, req, environ): adapt them
    to the full signature so that callers have one calling convention."""
    if callable(value) and not accepts(value, 4):
        if accepts(value, 3):
            return lambda worker, req, environ, _resp: value(worker, req, environ)
        if accepts(value, 2):
            return lambda worker, req, _environ, _resp: value(worker, req)
    return hook("worker", "req", "environ", "resp")(value)


# --- the table -----------------------------------------------------------------------------------

APPLICATION = "Application"
SOCKET = "Server socket"
WORKERS = "Worker processes"
HTTP = "HTTP"
BUFFERING = "Client I/O and buffering"
PROXY = "Proxies"
LOGGING = "Logging"
PROCESS = "Process"
TLS = "TLS"
HOOKS = "Server hooks"

GUNICORN_ACCESS_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


@dataclass
class Config:
    """The resolved configuration. Build it with cli.load_config (command line) or
    cli.make_config (Python API); `Config()` alone gives the plain defaults, unvalidated."""

    # Application
    app: str | None = setting(
        None, parse=optional_text, section=APPLICATION, metavar="APP", aliases=("wsgi_app",),
        doc="The WSGI application: MODULE:NAME, MODULE:FACTORY(ARGS) or MODULE.\n"
            "NAME may be dotted (`app:server.wsgi`). A factory is called with literal arguments "
            "only (`app:create('prod', debug=False)`): they are parsed, never evaluated. A bare "
            "MODULE serves its `application`, else its `app`. In a config file the name is "
            "`wsgi_app`, as in gunicorn.")
    config: str | None = setting(
        None, "-c", "--config", parse=optional_text, section=APPLICATION, metavar="FILE",
        doc="Config file: a Python file (gunicorn style) or a .toml file; python:MODULE "
            "imports a module by name.\n"
            "Without -c, the [tool.prefork] table of ./pyproject.toml is read if there is one "
            "(the directory prefork starts in, before --chdir). In a Python file, module-level "
            "names are settings (imported ones too); modules, names starting with `_` and "
            "functions that are not hooks are ignored; gunicorn settings prefork does not have "
            "are accepted, warned about or refused (docs/from-gunicorn.md). TOML "
            "keys may be spelled with `-` or `_`; an unknown key is an error. Precedence: "
            "defaults < config file < $PREFORK_CMD_ARGS < command line.")
    chdir: str | None = setting(
        None, "--chdir", parse=optional_text, section=APPLICATION, metavar="DIR",
        doc="Change to this directory before loading the application.\n"
            "It is also put on sys.path, first after the --pythonpath entries. Config files "
            "are found before the change.")
    pythonpath: str | None = setting(
        None, "--pythonpath", parse=comma_list, section=APPLICATION, metavar="DIRS",
        doc="Comma-separated directories to put first on sys.path, ahead of the working "
            "directory.\n"
            "As in gunicorn, each entry goes in front of the ones before it: with a,b, b is "
            "searched first. Relative entries are relative to --chdir. Prefer installing the "
            "application into its virtualenv; this is for layouts you cannot change.")
    raw_env: list[str] = setting(
        [], "-e", "--env", parse=env_list, section=APPLICATION, metavar="KEY=VALUE",
        doc="Set an environment variable for the application; repeat the flag for several.\n"
            "Set in the arbiter before the application is imported, so workers inherit it; a HUP "
            "sets the listed values again (a variable dropped from the list keeps its value "
            "until a restart). The config-file name is gunicorn's, raw_env = [\"KEY=VALUE\"]. "
            "Under systemd, Environment= in the unit does the same.")
    preload_app: bool = setting(
        False, "--preload", parse=boolean, section=APPLICATION,
        doc="Import the application in the arbiter, before forking the workers.\n"
            "Workers then share its memory copy-on-write and start faster. The price: sockets, "
            "threads and connections opened at import time are shared by every worker, so open "
            "them lazily or in post_fork.")
    reload: bool = setting(
        False, "--reload", parse=boolean, section=APPLICATION,
        doc="Restart the workers when a source file of the application changes.\n"
            "For development only: watching files costs CPU and can pick up a half-saved file. "
            "In production, deploy and send HUP.")
    reload_extra_files: list[str] = setting(
        [], "--reload-extra-file", parse=file_list, section=APPLICATION, metavar="FILE",
        doc="With --reload, also reload when this file changes; repeat for several.\n"
            "For templates, configuration and data files the application reads but does not "
            "import. Each must exist at start. gunicorn's glob patterns are not expanded.")
    reload_engine: str = setting(
        "auto", "--reload-engine", parse=choice("auto", "poll", "inotify"), section=APPLICATION,
        metavar="ENGINE",
        doc="How --reload notices changes: auto, poll or inotify.\n"
            "inotify needs the optional watchfiles package (pip install prefork[reload]) and "
            "reacts at once without reading every file's mtime each second; auto uses it when "
            "it is installed, else poll.")
    check_config: bool = setting(
        False, "--check-config", parse=boolean, section=APPLICATION,
        doc="Check the configuration, then exit.\n"
            "The exit status is 0 when it is valid; otherwise the error is printed on one line "
            "and the status is non-zero. Run it before sending HUP.")
    print_config: bool = setting(
        False, "--print-config", parse=boolean, section=APPLICATION,
        doc="Print the resolved configuration as `name = value` lines, then exit.\n"
            "Shows what defaults, config file, $PREFORK_CMD_ARGS and command line add up to; "
            "the output is valid Python, so it can start a config file.")

    # Server socket
    bind: list[str] = setting(
        [], "-b", "--bind", parse=bind_list, section=SOCKET, metavar="ADDRESS",
        default_doc="127.0.0.1:8000, or 0.0.0.0:$PORT",
        doc="Address to listen on; repeat the flag for several.\n"
            "Forms: HOST:PORT, [IPv6]:PORT, HOST (port 8000), :PORT (all IPv4 interfaces, "
            "0.0.0.0), unix:PATH, fd://N (an inherited socket). The default is 127.0.0.1:8000, "
            "or 0.0.0.0:$PORT when $PORT is set (platforms like Heroku). Sockets handed over by "
            "systemd (LISTEN_FDS) are used instead. Behind a reverse proxy on the same host, "
            "a unix socket saves the TCP overhead.")
    backlog: int = setting(
        2048, "--backlog", parse=integer(1), section=SOCKET, metavar="INT",
        doc="Maximum number of connections waiting in the kernel to be accepted.\n"
            "Beyond it, new connections are refused or retried by the client. The kernel caps "
            "it at net.core.somaxconn; 64-2048 is the usual range.")
    control_socket: str = setting(
        "auto", "--control-socket", parse=text, section=SOCKET, metavar="PATH",
        doc="Unix socket that `prefork status` and `prefork ctl` talk to; a path, `auto` or `off`.\n"
            "`auto` picks, in order: $RUNTIME_DIRECTORY/control.sock (systemd's RuntimeDirectory=), "
            "PIDFILE.ctl when --pid is set, else /tmp/prefork-PID.ctl. The socket is mode 0600: "
            "only the server's user (and root) can use it. `off` disables it.")
    metrics_bind: str | None = setting(
        None, "--metrics-bind", parse=optional_text, section=SOCKET, metavar="ADDRESS",
        doc="Serve metrics on this address (the forms of --bind); off by default.\n"
            "The endpoint is not authenticated: bind it to localhost or a unix socket.")
    enable_backlog_metric: bool = setting(
        False, "--enable-backlog-metric", parse=boolean, section=SOCKET,
        doc="Report each TCP listener's accept-queue depth at --metrics-bind.\n"
            "prefork_listen_queue_depth: connections the kernel accepted that no worker has "
            "taken yet (Linux; unix sockets report none). Steadily above zero means the "
            "workers cannot keep up. gunicorn sends the same number to statsd instead.")

    # Worker processes
    workers: int = setting(
        1, "-w", "--workers", parse=worker_count, section=WORKERS, metavar="INT",
        env="WEB_CONCURRENCY", default_doc="$WEB_CONCURRENCY, else 1",
        doc="Number of worker processes, or auto: one per CPU this process may use.\n"
            "Generally 2-4 x the number of CPU cores. Each worker runs one request at a time "
            "(times --threads), so size it for the concurrency you need and the memory you "
            "have. Defaults to $WEB_CONCURRENCY, set by some platforms. `auto` counts the CPUs "
            "the container really has: its cgroup CPU quota (v2 cpu.max, v1 cpu.cfs_quota_us) "
            "rounded up, at most the CPUs in the affinity mask, at least 1 (see "
            "docs/deploying.md); --print-config shows what it resolved to. TTIN/TTOU add or "
            "remove one at run time.")
    threads: int = setting(
        1, "--threads", parse=integer(1), section=WORKERS, metavar="INT",
        doc="Threads per worker that run the application.\n"
            "With 1, idle keep-alive connections still cost no thread. More threads help "
            "I/O-bound applications (waiting on databases or APIs), which must then be "
            "thread-safe; CPU-bound code gains nothing: add workers instead.")
    timeout: float = setting(
        30.0, "-t", "--timeout", parse=seconds, section=WORKERS, metavar="SECONDS",
        doc="Seconds a worker may go without a heartbeat before it is replaced; 0 = off.\n"
            "A worker beats between requests, so with one thread this also bounds how long a "
            "single request may run. The stuck worker gets SIGABRT (its stack goes to the error "
            "log), then SIGKILL. Keep 30 unless requests legitimately take longer.")
    graceful_timeout: float = setting(
        30.0, "--graceful-timeout", parse=seconds, section=WORKERS, metavar="SECONDS",
        doc="Seconds a retiring worker gets to finish its requests before it is killed.\n"
            "Applies to TERM, HUP and worker recycling. Set it above your slowest request so "
            "that a reload never cuts one short; systemd's TimeoutStopSec must be larger still.")
    shutdown_delay: float = setting(
        0.0, "--shutdown-delay", parse=seconds, section=WORKERS, metavar="SECONDS",
        env="PREFORK_SHUTDOWN_DELAY",
        default_doc="$PREFORK_SHUTDOWN_DELAY, else 0",
        doc="On TERM, keep accepting and serving this long (reported as stopping), then drain.\n"
            "A load balancer learns of a stop later than the server does (Kubernetes removes a "
            "pod from its Service asynchronously), so new connections still arrive for a "
            "second or more after TERM; serving them avoids 502s at the ingress, with no "
            "preStop sleep. During the delay the health path answers 503, `prefork status "
            "--check` fails and systemd sees STOPPING=1. A second TERM, or INT, skips the "
            "rest of it. Behind Kubernetes 5-10 s is typical; terminationGracePeriodSeconds "
            "must exceed it plus --graceful-timeout.")
    max_requests: int = setting(
        0, "--max-requests", parse=integer(0), section=WORKERS, metavar="INT",
        doc="Recycle a worker after it has served this many requests; 0 = never.\n"
            "A blunt but effective cure for slow memory leaks in the application. Add "
            "--max-requests-jitter so that the workers do not all restart at once. The worker "
            "serves on until its replacement is ready, so recycling never costs capacity, and "
            "if the code on disk no longer boots it keeps serving (past the count).")
    max_requests_jitter: int = setting(
        0, "--max-requests-jitter", parse=integer(0), section=WORKERS, metavar="INT",
        doc="Add a random 0..N to each worker's --max-requests.\n"
            "Spreads recycling over time; about 10% of --max-requests is typical.")
    max_worker_memory: int = setting(
        0, "--max-worker-memory", parse=integer(0), section=WORKERS, metavar="MIB",
        doc="Recycle a worker gracefully once its resident memory exceeds this many MiB; 0 = off.\n"
            "Set it comfortably below the memory you can afford per worker, so that a leaking "
            "worker is replaced before the kernel's OOM killer picks a victim: it serves on "
            "until its replacement is ready (indefinitely if the code on disk cannot boot).")

    # HTTP
    keepalive: float = setting(
        5.0, "--keep-alive", parse=seconds, section=HTTP, metavar="SECONDS",
        doc="Seconds an idle keep-alive connection waits for its next request.\n"
            "Idle connections cost a buffer, not a worker, so a few seconds are cheap. Behind "
            "a load balancer, set it above the balancer's idle timeout (e.g. 75 for a 60 s "
            "timeout) so that the balancer, not prefork, closes idle connections. 0 closes "
            "each connection after one response.")
    head_timeout: float = setting(
        10.0, "--head-timeout", parse=seconds, section=HTTP, metavar="SECONDS",
        doc="Seconds a client has to send a complete request head (request line and headers).\n"
            "Stops slowloris-style clients that trickle headers to hold connections open.")
    body_timeout: float = setting(
        30.0, "--body-timeout", parse=seconds, section=HTTP, metavar="SECONDS",
        doc="Seconds to wait for the next bytes of a request body, or for a client to take "
            "response bytes.\n"
            "It bounds each wait, not the whole transfer, so large uploads and downloads over "
            "slow links work. A client silent for longer is dropped; it never holds a worker.")
    lingering_time: float = setting(
        30.0, "--lingering-time", parse=seconds, section=HTTP, metavar="SECONDS",
        doc="Seconds to go on reading, and discarding, what a client sends after an early error "
            "response (a 413 for a body over the limit, a 400) before closing.\n"
            "Closing with bytes unread makes the kernel send a reset, and a client still "
            "uploading then reports the reset, not the response (nginx's lingering_close "
            "exists for this). Reading stops when the client closes, after 5 s of silence, or "
            "after this long; a lingering connection holds only its file descriptor. 0 closes "
            "at once.")
    limit_request_line: int = setting(
        4094, "--limit-request-line", parse=integer(0), section=HTTP, metavar="BYTES",
        doc="Maximum size of the request line (method, target, version); longer gets 414.\n"
            "The default fits almost every URL; raise it for very long query strings. 0 means "
            "gunicorn's 'unlimited', which here is a 64 KiB ceiling: a head is always bounded.")
    limit_request_fields: int = setting(
        100, "--limit-request-fields", parse=integer(0), section=HTTP, metavar="INT",
        doc="Maximum number of header fields in a request; more gets 431.\n"
            "Browsers send 10-30; the default leaves room for proxies and tracing headers. "
            "0 means a ceiling of 32768.")
    limit_request_field_size: int = setting(
        8190, "--limit-request-field-size", "--limit-request-field_size", parse=integer(0),
        section=HTTP, metavar="BYTES",
        doc="Maximum size of one header field (name and value) in bytes; larger gets 431.\n"
            "Large cookies or bearer tokens are the usual reason to raise it. gunicorn's "
            "spelling --limit-request-field_size is accepted too. 0 means a 64 KiB ceiling.")
    limit_request_body: int = setting(
        0, "--limit-request-body", parse=integer(0), section=HTTP, metavar="BYTES",
        doc="Maximum size of a request body in bytes; larger gets 413. 0 = unlimited.\n"
            "Set it when the application takes no large uploads, unless the reverse proxy "
            "already limits bodies (nginx client_max_body_size).")
    # Client I/O and buffering
    request_buffering: bool = setting(
        True, "--no-request-buffering", parse=boolean, section=BUFFERING,
        doc="Hand the application the request body as it arrives instead of buffering it first.\n"
            "By default the event loop reads the whole body (memory, then a spool file) before "
            "the application runs, so a client that stalls its upload costs a buffer, not a "
            "worker. Turn buffering off only for applications that must see an upload while it "
            "arrives: a stalled upload then holds its worker for up to --body-timeout per read "
            "(like nginx's proxy_request_buffering off).")
    body_buffer_size: int = setting(
        65536, "--body-buffer-size", parse=integer(0), section=BUFFERING, metavar="BYTES",
        doc="Request bodies up to this size are buffered in memory; larger ones in a spool file.\n"
            "The spool file is unlinked from the start (in --worker-tmp-dir), so nothing is left "
            "behind. The default keeps many slow uploads cheap (40 stalled 1 MiB uploads cost "
            "2.5 MiB of memory); nginx's client_body_buffer_size is the same knob.")
    response_buffer_size: int = setting(
        262144, "--response-buffer-size", parse=integer(0), section=BUFFERING, metavar="BYTES",
        doc="Response bytes one connection may park in memory while its client is slow to read.\n"
            "The application's response is sent as it is produced; what the client cannot take "
            "yet is kept in memory up to this size, then in a spool file, so the application is "
            "done as soon as it has produced its response.")
    response_spool_max: int = setting(
        1 << 30, "--response-spool-max", parse=integer(0), section=BUFFERING, metavar="BYTES",
        doc="Most bytes one response may spool to disk; beyond it the response is streamed.\n"
            "Streaming means the worker waits for the client (up to --body-timeout per wait), "
            "so an endless response (server-sent events) to a slow client never fills a disk. "
            "0 = never spool: parked responses beyond --response-buffer-size are streamed.")
    worker_buffer_memory: int = setting(
        64 << 20, "--worker-buffer-memory", parse=integer(0), section=BUFFERING, metavar="BYTES",
        doc="Memory all buffers of one worker may hold together (bodies and parked responses).\n"
            "Beyond it, new buffered bytes go to spool files even under the per-connection "
            "sizes, so many slow clients at once cannot grow a worker's memory without bound.")
    worker_tmp_dir: str | None = setting(
        None, "--worker-tmp-dir", parse=optional_text, section=BUFFERING, metavar="DIR",
        default_doc="the system temporary directory ($TMPDIR, else /tmp)",
        doc="Directory for spool files (request bodies and responses too large for memory).\n"
            "Files are created unlinked (O_TMPFILE), readable only by the worker, and vanish "
            "when closed or when the worker dies. Point it at a disk with room for your largest "
            "uploads; a tmpfs makes spooling cost memory again.")
    worker_connections: int = setting(
        0, "--worker-connections", parse=integer(0), section=BUFFERING, metavar="INT",
        default_doc="0: from the open-file limit",
        doc="Most client connections one worker holds at once; 0 = from the open-file limit.\n"
            "A worker at its cap stops accepting and leaves new connections to the other "
            "workers and the listen backlog. The automatic cap is half the worker's "
            "RLIMIT_NOFILE (each connection may need a spool file too), and the arbiter raises "
            "the soft limit to the hard one at start.")
    root_path: str = setting(
        "", "--root-path", parse=url_prefix, section=HTTP, metavar="PATH",
        default_doc="$SCRIPT_NAME, else ''",
        doc="URL prefix the application is mounted under (WSGI SCRIPT_NAME), e.g. /api.\n"
            "Use it when a reverse proxy serves the application below a path, so that the "
            "application generates URLs under that prefix. Without it, $SCRIPT_NAME (also "
            "from -e SCRIPT_NAME=...) is used, as gunicorn does.")
    health_path: str | None = setting(
        None, "--health-path", parse=request_path, section=HTTP, metavar="PATH",
        doc="Answer GET/HEAD on this path from the event loop, without the application.\n"
            "200 while the server accepts work, 503 once it is stopping (--shutdown-delay and "
            "the drain), so a readiness probe or a load balancer's health check takes the "
            "replica out before it stops accepting. It says the server is up, not that the "
            "application's dependencies are; e.g. /healthz. Off by default.")
    server_header: bool = setting(
        True, "--no-server-header", parse=boolean, section=HTTP,
        doc="Do not send the Server response header.\n"
            "Hides the server's name from responses (on its own, not a security measure).")

    # Proxies
    forwarded_allow_ips: str = setting(
        "127.0.0.1,::1", "--forwarded-allow-ips", parse=address_list, section=PROXY,
        metavar="IPS", env="FORWARDED_ALLOW_IPS",
        default_doc="$FORWARDED_ALLOW_IPS, else 127.0.0.1,::1",
        doc="Proxies (IPs or networks, comma separated; * = any) whose X-Forwarded-* and "
            "Forwarded headers are trusted.\n"
            "List only your own reverse proxies: a trusted header lets a client choose its "
            "REMOTE_ADDR and URL scheme. Use * only when nothing but the proxy can reach "
            "prefork (e.g. through a unix socket).")
    proxy_protocol: bool = setting(
        False, "--proxy-protocol", parse=proxy_protocol_mode, section=PROXY, metavar="MODE",
        const="auto",
        doc="Expect a PROXY protocol header (HAProxy) at the start of each connection.\n"
            "For load balancers that pass the client address this way. Only peers in "
            "--proxy-allow-from may send it. Versions 1 and 2 are both recognised, so "
            "gunicorn's modes v1, v2 and auto (the flag alone) all mean on, and off means off.")
    proxy_allow_ips: str = setting(
        "127.0.0.1,::1", "--proxy-allow-from", parse=address_list, section=PROXY, metavar="IPS",
        doc="Peers (IPs or networks, comma separated; * = any) allowed to send a PROXY header.\n"
            "Keep it to your load balancers' addresses.")

    # Logging
    loglevel: str = setting(
        "info", "--log-level", parse=choice("debug", "info", "warning", "error", "critical"),
        section=LOGGING, metavar="LEVEL",
        doc="Error log level: debug, info, warning, error or critical.\n"
            "`info` shows starts, stops, reloads and worker deaths; `debug` is for chasing "
            "a problem.")
    errorlog: str = setting(
        "-", "--error-logfile", "--log-file", parse=text, section=LOGGING, metavar="FILE",
        doc="Error log file; - = stderr.\n"
            "Under systemd keep stderr: the journal stores it, and prefork then leaves out the "
            "timestamp and marks each line's priority (<3>) for the journal. A file is reopened "
            "on USR1, so logrotate can rename it (postrotate: kill -USR1; no copytruncate).")
    accesslog: str | None = setting(
        None, "--access-logfile", parse=optional_text, section=LOGGING, metavar="FILE",
        doc="Access log file; - = stdout; off by default.\n"
            "Lines are buffered and written at least once a second (and on exit), not once per "
            "request; the reverse proxy often logs requests already.")
    access_log_format: str = setting(
        GUNICORN_ACCESS_FORMAT, "--access-logformat", parse=text, section=LOGGING,
        metavar="FORMAT",
        doc="Access log format, with gunicorn's atoms (%(h)s, %(r)s, %(s)s, %(b)s, %(D)s, ...).\n"
            "The default is Apache's combined format, so existing log parsers keep working. "
            "Common atoms: h remote address, r request line, s status, b body bytes, "
            "D microseconds, {name}i request header, {name}o response header.")
    access_log_json: bool = setting(
        False, "--access-log-json", parse=boolean, section=LOGGING,
        doc="Write the access log as one JSON object per line.\n"
            "Easier for log shippers than parsing a text format.")
    logconfig: str | None = setting(
        None, "--log-config", parse=optional_text, section=LOGGING, metavar="FILE",
        doc="A logging.dictConfig dictionary in a JSON or TOML file, or a logging.fileConfig "
            ".ini/.conf/.cfg file (gunicorn's); replaces the log setup.\n"
            "Configure the `prefork.error` logger there; loggers named `gunicorn.error` and "
            "`gunicorn.access` (a gunicorn file's) configure `prefork.error` and "
            "`prefork.access` too. Unless the file says otherwise, loggers it does not mention "
            "keep working (disable_existing_loggers = false). --check-config loads it; a bad "
            "file is a one-line error.")

    logconfig_dict: dict[str, Any] | None = setting(
        None, parse=optional_dict, section=LOGGING, default_doc="{}",
        doc="A logging.dictConfig dictionary, in a Python config file; replaces the log setup.\n"
            "As in gunicorn it is laid over gunicorn's default dictionary key by key (a "
            "`loggers` key replaces all default loggers), and it wins over logconfig_json and "
            "--log-config. Loggers named `gunicorn.error` and `gunicorn.access` configure "
            "prefork's `prefork.error` and `prefork.access` too. An access logger with its own "
            "handlers receives every access line.")
    logconfig_json: str | None = setting(
        None, "--log-config-json", parse=optional_text, section=LOGGING, metavar="FILE",
        doc="A logging.dictConfig dictionary in a JSON file, treated like logconfig_dict.\n"
            "It wins over --log-config.")
    syslog: bool = setting(
        False, "--log-syslog", parse=boolean, section=LOGGING,
        doc="Also send the error log, and the access log, to syslog.\n"
            "Lines are tagged `gunicorn.PREFIX.error` / `gunicorn.PREFIX.access` as gunicorn "
            "tags them, so existing syslog rules keep matching. "
            "--disable-redirect-access-to-syslog keeps access lines out.")
    syslog_addr: str = setting(
        "udp://localhost:514", "--log-syslog-to", parse=syslog_address, section=LOGGING,
        metavar="SYSLOG_ADDR",
        doc="Where syslog lines go: udp://HOST:PORT, tcp://HOST:PORT or unix://PATH.\n"
            "unix://PATH#dgram or #stream picks the socket type (without it, datagram is "
            "tried first); use unix:///dev/log for the local syslog daemon or the journal.")
    syslog_prefix: str | None = setting(
        None, "--log-syslog-prefix", parse=optional_text, section=LOGGING, metavar="SYSLOG_PREFIX",
        doc="The PREFIX in the syslog tag `gunicorn.PREFIX.error`.\n"
            "Defaults to --name, else the application (`:` becomes `.`).")
    syslog_facility: str = setting(
        "user", "--log-syslog-facility", parse=choice(*SYSLOG_FACILITIES), section=LOGGING,
        metavar="SYSLOG_FACILITY",
        doc="Syslog facility name: user, daemon, local0 ... local7, ...")
    disable_redirect_access_to_syslog: bool = setting(
        False, "--disable-redirect-access-to-syslog", parse=boolean, section=LOGGING,
        doc="With --log-syslog, keep access lines out of syslog.")
    capture_output: bool = setting(
        False, "--capture-output", parse=boolean, section=LOGGING,
        doc="Redirect stdout and stderr (print(), C extensions, the workers') to --error-logfile.\n"
            "Only when the error log is a file, as in gunicorn; the redirection follows a "
            "USR1 reopen.")
    statsd_host: str | None = setting(
        None, "--statsd-host", parse=statsd_address, section=LOGGING, metavar="STATSD_ADDR",
        doc="Send metrics to this StatsD server: HOST:PORT (UDP) or unix://PATH; off by default.\n"
            "gunicorn's metric names and types: gunicorn.requests, gunicorn.request.duration "
            "(ms), gunicorn.request.status.CODE, gunicorn.workers, gunicorn.log.LEVEL. A worker "
            "sends what a turn of its loop served in one datagram, never waiting for the server.")
    statsd_prefix: str = setting(
        "", "--statsd-prefix", parse=any_text, section=LOGGING, metavar="STATSD_PREFIX",
        doc="Prefix for the StatsD metric names (a trailing `.` is added if missing).")
    dogstatsd_tags: str = setting(
        "", "--dogstatsd-tags", parse=any_text, section=LOGGING, metavar="DOGSTATSD_TAGS",
        doc="Comma-separated Datadog (dogstatsd) tags added to every metric, e.g. env:prod,app:shop.")

    # Process
    proc_name: str | None = setting(
        None, "-n", "--name", parse=optional_text, section=PROCESS, metavar="NAME",
        doc="Name shown by ps and top instead of the application.\n"
            "Set it when several prefork instances run on one host.")
    pidfile: str | None = setting(
        None, "-p", "--pid", parse=optional_text, section=PROCESS, metavar="FILE",
        doc="Write the arbiter's process id to this file.\n"
            "systemd does not need it; init scripts and the USR2 upgrade procedure do.")
    user: str | None = setting(
        None, "-u", "--user", parse=account("user"), section=PROCESS, metavar="USER",
        doc="Run the workers as this user (name or uid).\n"
            "Needs root to start. Under systemd, User= in the unit is simpler.")
    group: str | None = setting(
        None, "-g", "--group", parse=account("group"), section=PROCESS, metavar="GROUP",
        doc="Run the workers as this group (name or gid).\n"
            "Needs root to start. Under systemd, Group= in the unit is simpler.")
    umask: int | None = setting(
        None, "-m", "--umask", parse=umask_value, section=PROCESS, metavar="MASK",
        default_doc="inherited", doc="umask for the files prefork and the app create, unix sockets included.\n"
            "Octal (0o22 or 022) or decimal. Without it, prefork keeps the umask it was started "
            "with (systemd's UMask=, the shell's umask): a default must never loosen it. "
            "0o007 keeps a unix socket to its owner and group, e.g. a group shared with the "
            "reverse proxy.")

    # TLS
    certfile: str | None = setting(
        None, "--certfile", parse=optional_text, section=TLS, metavar="FILE",
        doc="Serve HTTPS with this certificate (PEM, chain after the certificate).\n"
            "Terminating TLS in a reverse proxy is usually simpler; use this when prefork "
            "faces clients directly.")
    keyfile: str | None = setting(
        None, "--keyfile", parse=optional_text, section=TLS, metavar="FILE",
        doc="Private key for --certfile (PEM), unless the certificate file holds it.")
    ca_certs: str | None = setting(
        None, "--ca-certs", parse=optional_text, section=TLS, metavar="FILE",
        doc="CA certificates (PEM) that client certificates are checked against.\n"
            "Only needed with --cert-reqs 1 or 2.")
    cert_reqs: int = setting(
        0, "--cert-reqs", parse=cert_requirement, section=TLS, metavar="N",
        doc="Client certificates: 0 not asked, 1 optional, 2 required (or CERT_NONE, ...).\n"
            "2 with --ca-certs is mutual TLS.")
    ciphers: str | None = setting(
        None, "--ciphers", parse=optional_text, section=TLS, metavar="LIST",
        doc="OpenSSL cipher list for TLS 1.2 and older.\n"
            "Leave it unset: Python's defaults follow current advice.")

    # Server hooks: config-file only, gunicorn's names and signatures
    on_starting: Hook = hook_setting(
        "server", doc="Called in the arbiter once, before it binds sockets and starts workers.")
    when_ready: Hook = hook_setting(
        "server", doc="Called in the arbiter once the sockets are open and the workers spawned.")
    on_reload: Hook = hook_setting(
        "server", doc="Called in the arbiter when a reload (HUP) begins.")
    pre_fork: Hook = hook_setting(
        "server", "worker", doc="Called in the arbiter just before a worker is forked.")
    post_fork: Hook = hook_setting(
        "server", "worker",
        doc="Called in a new worker just after the fork, before it loads the application.\n"
            "With --preload, the place to reopen connections the arbiter opened at import.")
    post_worker_init: Hook = hook_setting(
        "worker", doc="Called in a worker after it has loaded the application.")
    pre_request: Hook = hook_setting(
        "worker", "req",
        doc="Called in a worker before each request goes to the application.\n"
            "It runs for every request: keep it cheap.")
    post_request: Hook = hook_setting(
        "worker", "req", "environ", "resp", parse=post_request_hook,
        doc="Called in a worker after each request.\n"
            "gunicorn's shorter forms (worker, req) and (worker, req, environ) work too.")
    worker_int: Hook = hook_setting(
        "worker", doc="Called in a worker that got INT or QUIT (a fast stop), before it exits.")
    worker_abort: Hook = hook_setting(
        "worker",
        doc="Called in a worker that got SIGABRT (its heartbeat timed out), before it exits.\n"
            "It runs after the worker's stack is written to the error log, and only if the "
            "worker is stuck in Python code; one stuck inside a C call is killed after a grace.")
    worker_exit: Hook = hook_setting(
        "server", "worker", doc="Called in a worker process just before it exits.")
    child_exit: Hook = hook_setting(
        "server", "worker",
        doc="Called in the arbiter just after it reaped a worker, whatever ended it.\n"
            "Unlike worker_exit it also runs for a worker killed by SIGKILL or a crash: the "
            "place for prometheus_client's multiprocess.mark_process_dead(worker.pid).")
    nworkers_changed: Hook = hook_setting(
        "server", "new_value", "old_value",
        doc="Called in the arbiter when the wanted number of workers changes.\n"
            "At start (old_value is None), on TTIN/TTOU, and when a reload brings a new -w.")
    pre_exec: Hook = hook_setting(
        "server",
        doc="Called in the forked child just before a USR2 upgrade execs the new arbiter.\n"
            "Environment variables it sets are inherited by the new arbiter.")
    on_exit: Hook = hook_setting(
        "server", doc="Called in the arbiter just before prefork exits.")
    ssl_context: Hook = hook_setting(
        "config", "default_ssl_context_factory", default=_default_ssl_context,
        default_doc="the context the TLS settings describe",
        doc="Return the ssl.SSLContext for HTTPS; called in each worker as it starts.\n"
            "default_ssl_context_factory() builds the context from --certfile and the other TLS "
            "settings; change it (e.g. minimum_version) and return it. Only used with --certfile.")


# --- access to the table -------------------------------------------------------------------------

FIELDS: tuple[Field, ...] = fields(Config)
BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
_NAMES: dict[str, str] = {name: f.name for f in FIELDS
                          for name in (f.name, *f.metadata[SPEC].aliases)}


def spec(f: Field) -> Spec:
    """The Spec of one field."""
    return f.metadata[SPEC]


def is_hook(f: Field) -> bool:
    """Hooks are config-file only and left out of --print-config."""
    return spec(f).section == HOOKS


def lookup(name: str) -> str | None:
    """The field name for a setting name or alias (`wsgi_app` -> `app`), or None."""
    return _NAMES.get(name)


def setting_names() -> list[str]:
    """Every name a config file may use, for did-you-mean hints."""
    return sorted(_NAMES)


_BY_FLAG = {flag.lstrip("-").replace("-", "_"): f.name
            for f in FIELDS for flag in f.metadata[SPEC].flags if flag.startswith("--")}


def suggest_setting(key: str) -> str:
    """` (did you mean 'preload_app'?)` for a key that is a flag's name (`preload`, `log-level`)
    or close to a setting's name, else ``."""
    flag_name = _BY_FLAG.get(key.replace("-", "_"))
    if flag_name:
        return f" (did you mean {flag_name!r}?)"
    return did_you_mean(key.replace("-", "_"), setting_names())


def validate(name: str, value: Any, label: str) -> Any:
    """Parse one raw value for the field `name`; the ConfigError starts with `label`."""
    try:
        return spec(BY_NAME[name]).parse(value)
    except ValueError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def env_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """Defaults that the environment replaces (WEB_CONCURRENCY, FORWARDED_ALLOW_IPS)."""
    return {f.name: validate(f.name, environ[spec(f).env], spec(f).env)
            for f in FIELDS if spec(f).env and environ.get(spec(f).env)}


def default_value(f: Field) -> Any:
    """The field's dataclass default."""
    return f.default_factory() if f.default is MISSING else f.default


def default_text(f: Field) -> str:
    """The default as people should read it: `30`, not `30.0`; the words where they exist."""
    if spec(f).default_doc:
        return spec(f).default_doc
    value = default_value(f)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return repr(value)


def did_you_mean(word: str, choices: Iterable[str], quote: bool = True) -> str:
    """` (did you mean 'workers'?)` for a near miss, else ``."""
    matches = difflib.get_close_matches(word, list(choices), n=1)
    if not matches:
        return ""
    return f" (did you mean {matches[0]!r}?)" if quote else f" (did you mean {matches[0]}?)"
