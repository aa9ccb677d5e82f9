"""The settings table and everything generated from it: command line, config files,
precedence, make_config, --print-config, the settings reference."""

import logging
import re
import sys
import textwrap

import pytest

from prefork.config import settings
from prefork.config.cli import (INVOCATION_ONLY, build_parser, format_config, load_config, make_config,
                                settings_reference_markdown)
from prefork.config.settings import FIELDS, Config, ConfigError, is_hook, spec


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Run in an empty directory (no stray pyproject.toml) with no environment defaults."""
    monkeypatch.chdir(tmp_path)
    for name in ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "PORT", "PREFORK_CMD_ARGS", "SCRIPT_NAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_warnings():
    """Warnings the loaders log on "prefork.error", collected whatever its handlers are."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("prefork.error")
    logger.addHandler(handler)
    yield lambda: [record.getMessage() for record in records]
    logger.removeHandler(handler)


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


# --- precedence ----------------------------------------------------------------------------------

PRECEDENCE = [
    # setting, TOML line, $PREFORK_CMD_ARGS, argv, expected after (file, +env args, +argv)
    ("workers", "workers = 2", "-w 3", ["-w", "4"], (2, 3, 4)),
    ("timeout", "timeout = 5", "--timeout=6.5", ["-t", "7"], (5.0, 6.5, 7.0)),
    ("bind", 'bind = ["127.0.0.1:1", "[::1]:2"]', "-b 127.0.0.1:3", ["-b", "unix:/tmp/s.sock"],
     (["127.0.0.1:1", "[::1]:2"], ["127.0.0.1:3"], ["unix:/tmp/s.sock"])),
    ("loglevel", 'loglevel = "debug"', "--log-level WARNING", ["--log-level", "error"],
     ("debug", "warning", "error")),
    ("umask", "umask = 18", "-m 0o77", ["--umask", "0"], (18, 63, 0)),
    ("access_log_format", 'access-log-format = "%(h)s"', "--access-logformat '%(h)s %(r)s'",
     ["--access-logformat", "%(s)s"], ("%(h)s", "%(h)s %(r)s", "%(s)s")),
    ("forwarded_allow_ips", 'forwarded_allow_ips = ["10.0.0.0/8", "::1"]',
     "--forwarded-allow-ips '*'", ["--forwarded-allow-ips", "192.168.0.1"],
     ("10.0.0.0/8,::1", "*", "192.168.0.1")),
    # APP: the same on the command line is fine; a different one is an error (see below)
    ("app", 'wsgi_app = "file:app"', "env:app", ["env:app"], ("file:app", "env:app", "env:app")),
]


@pytest.mark.parametrize(("name", "toml", "env_args", "argv", "expected"), PRECEDENCE,
                         ids=[case[0] for case in PRECEDENCE])
def test_each_layer_overrides_the_one_below(tmp_path, name, toml, env_args, argv, expected):
    write(tmp_path / "prefork.toml", toml)
    file_args = ["-c", "prefork.toml"]
    default = getattr(load_config([], {}), name)
    assert default == getattr(Config(), name)
    assert getattr(load_config(file_args, {}), name) == expected[0] != default
    assert getattr(load_config(file_args, {"PREFORK_CMD_ARGS": env_args}), name) == expected[1]
    assert getattr(load_config(file_args + argv, {"PREFORK_CMD_ARGS": env_args}), name) \
        == expected[2]


def test_layers_combine_different_settings(tmp_path):
    write(tmp_path / "app.conf.py", """
        workers = 2
        threads = 3
        timeout = 40
    """)
    cfg = load_config(["-c", "app.conf.py", "--timeout", "50"],
                      {"PREFORK_CMD_ARGS": "--threads 4 --timeout 45", "WEB_CONCURRENCY": "9"})
    assert (cfg.workers, cfg.threads, cfg.timeout) == (2, 4, 50.0)


def test_config_file_can_be_named_in_prefork_cmd_args(tmp_path):
    write(tmp_path / "env.toml", "workers = 5")
    write(tmp_path / "argv.toml", "workers = 6")
    assert load_config([], {"PREFORK_CMD_ARGS": "-c env.toml"}).workers == 5
    assert load_config(["-c", "argv.toml"], {"PREFORK_CMD_ARGS": "-c env.toml"}).workers == 6


def test_the_command_line_app_wins_over_prefork_cmd_args(tmp_path):
    """Later layers win, APP too (the systemd env file's APP yields to ExecStart='s)."""
    cfg = load_config(["main:app"], {"PREFORK_CMD_ARGS": "hello:app -w 3"})
    assert (cfg.app, cfg.workers) == ("main:app", 3)
    assert load_config([], {"PREFORK_CMD_ARGS": "hello:app"}).app == "hello:app"


@pytest.mark.parametrize(("argv", "app", "on"), [
    (["--proxy-protocol", "hello:app"], "hello:app", True),
    (["--proxy-protocol", "hello:app", "--proxy-protocol"], "hello:app", True),
    (["--proxy-protocol", "hello:app", "--proxy-protocol", "off"], "hello:app", False),
    (["--proxy-protocol", "OFF", "hello:app", "--proxy-protocol", "V2"], "hello:app", True),
    (["hello:app", "--proxy-protocol", "off", "--proxy-protocol"], "hello:app", True),
    (["--proxy-protocol", "-w", "2", "hello:app"], "hello:app", True),
])
def test_proxy_protocol_takes_a_mode_word_only(argv, app, on):
    """The word after a bare --proxy-protocol is its MODE when it is one, else APP (prefork's
    old reading); repeats: the last wins, and APP is never lost."""
    cfg = load_config(argv, {})
    assert (cfg.app, cfg.proxy_protocol) == (app, on)


def test_gunicorn_cmd_args_ignores_words_that_are_no_options(tmp_path, config_warnings):
    """gunicorn reads only options from $GUNICORN_CMD_ARGS: a stray word never replaces APP."""
    write(tmp_path / "c.py", "wsgi_app = 'main:app'\n")
    cfg = load_config(["-c", "c.py"], {"GUNICORN_CMD_ARGS": "--preload true -w 2"})
    assert (cfg.app, cfg.preload_app, cfg.workers) == ("main:app", True, 2)
    assert config_warnings()[1:] == [
        "GUNICORN_CMD_ARGS: 'true' ignored: gunicorn reads only options there"]
    assert load_config(["app:app"], {"GUNICORN_CMD_ARGS": "-w 2 a b"}).app == "app:app"


def test_web_concurrency_sets_the_default_worker_count(tmp_path):
    assert load_config([], {}).workers == 1
    assert load_config([], {"WEB_CONCURRENCY": "6"}).workers == 6
    write(tmp_path / "prefork.toml", "workers = 2")
    assert load_config(["-c", "prefork.toml"], {"WEB_CONCURRENCY": "6"}).workers == 2
    assert load_config(["-w", "3"], {"WEB_CONCURRENCY": "6"}).workers == 3


def test_forwarded_allow_ips_environment_sets_the_default():
    assert load_config([], {}).forwarded_allow_ips == "127.0.0.1,::1"
    assert load_config([], {"FORWARDED_ALLOW_IPS": "10.0.0.1, 10.0.0.2"}).forwarded_allow_ips \
        == "10.0.0.1,10.0.0.2"
    assert load_config(["--forwarded-allow-ips", "*"],
                       {"FORWARDED_ALLOW_IPS": "10.0.0.1"}).forwarded_allow_ips == "*"


def test_port_leaves_bind_to_the_default_and_is_checked():
    assert load_config([], {"PORT": "5000"}).bind == []  # binds.default_binds resolves it
    with pytest.raises(ConfigError, match=r"^PORT: must be a port number 0-65535, got 'x'$"):
        load_config([], {"PORT": "x"})
    assert load_config(["-b", "127.0.0.1:1"], {"PORT": "5000"}).bind == ["127.0.0.1:1"]


# --- config files --------------------------------------------------------------------------------

def test_python_config_file_with_hooks_and_gunicorn_names(tmp_path, config_warnings):
    write(tmp_path / "gunicorn.conf.py", """
        import multiprocessing
        from os import path
        from os.path import join as workers_helper

        bind = "unix:/tmp/app.sock"
        workers = multiprocessing.cpu_count() * 0 + 3
        wsgi_app = "myapp:application"
        keepalive = 75
        preload_app = True
        worker_class = "sync"
        worker_connections = 1000  # supported: the connection cap
        statsd_host = "localhost:8125"  # supported
        spew = True
        daemon = False
        wrokers = 5
        _private = object()
        DEBUG = True
        calls = []

        def helper():
            return 1

        def post_fork(server, worker):
            calls.append(("post_fork", server, worker))

        def post_request(worker, req):
            calls.append(("post_request", worker, req))

        def on_dirty_starting(arbiter):
            pass
    """)
    cfg = load_config(["-c", "gunicorn.conf.py"], {})
    assert cfg.bind == ["unix:/tmp/app.sock"]
    assert (cfg.workers, cfg.app, cfg.keepalive, cfg.preload_app) == (3, "myapp:application", 75.0,
                                                                      True)
    assert cfg.config == str(tmp_path / "gunicorn.conf.py")
    cfg.post_fork("S", "W")
    cfg.post_request("W", "R", {"environ": 1}, "resp")  # the 2-argument form is adapted
    assert cfg.post_fork.__globals__["calls"] == [("post_fork", "S", "W"),
                                                  ("post_request", "W", "R")]
    assert cfg.on_starting("server") is None  # hooks not in the file stay no-ops
    unsupported = "gunicorn.conf.py: gunicorn setting {!r} is not supported by prefork; ignored"
    # Each warning ends in what prefork does instead, in parentheses; daemon = False and
    # worker_class = "sync" ask for what prefork does anyway: no warning.
    warnings = [w.partition(" (")[0] if "not supported" in w else w for w in config_warnings()]
    assert sorted(warnings) == sorted([
        *(unsupported.format(name) for name in ("spew", "on_dirty_starting")),
        "gunicorn.conf.py: unknown setting 'wrokers' ignored (did you mean 'workers'?)",
        "gunicorn.conf.py: unknown setting 'calls' ignored",
    ])


def test_python_config_imports_settings_from_a_shared_base(tmp_path, config_warnings):
    write(tmp_path / "pfc_base_conf.py", """
        workers = 6
        timeout = 90
        helpers = ["not", "a", "setting"]

        def app(environ, start_response):
            return []

        def post_fork(server, worker):
            return "from base"
    """)
    write(tmp_path / "prod.conf.py", """
        from pfc_base_conf import *
        from pfc_base_conf import app, post_fork

        timeout = 120
    """)
    try:
        cfg = load_config(["-c", "prod.conf.py"], {})
    finally:
        sys.modules.pop("pfc_base_conf", None)
    assert (cfg.workers, cfg.timeout, cfg.app) == (6, 120.0, None)  # `app` is a function here
    assert cfg.post_fork(None, None) == "from base"
    assert config_warnings() == []  # `helpers` is the base file's business
    assert str(tmp_path) not in sys.path


def test_python_config_value_that_is_a_function_by_mistake_is_an_error(tmp_path):
    write(tmp_path / "c.py", "import os\nworkers = os.cpu_count\n")
    with pytest.raises(ConfigError,
                       match=r"^c.py: workers: must be an integer >= 1 or auto, got <built-in"):
        load_config(["-c", "c.py"], {})


@pytest.mark.parametrize("line, message", [
    ('worker_class = "gevent"', "worker_class = 'gevent' is refused by prefork: One worker model"),
    ('paste = "development.ini"', "paste = 'development.ini' is refused by prefork: Refused: no PasteDeploy"),
    ("daemon = True", "daemon = True is refused by prefork: Refused: prefork never daemonizes"),
    ('secure_scheme_headers = {"X-SCHEME": "https"}', "secure_scheme_headers = {'X-SCHEME': 'https'} is"),
    ('header_map = "dangerous"', "header_map = 'dangerous' is refused by prefork"),
    ('http_protocols = ["h2", "h1"]', "http_protocols = ['h2', 'h1'] is refused by prefork"),
    ('dirty_apps = ["shop.jobs:app"]', "dirty_apps = ['shop.jobs:app'] is refused by prefork"),
])
def test_python_config_refuses_gunicorn_settings_that_change_the_app(tmp_path, line, message):
    """Ignoring these would change what the app sees or how it runs: an error, not a warning."""
    write(tmp_path / "c.py", line + "\nthreads = 4\n")
    with pytest.raises(ConfigError) as caught:
        load_config(["-c", "c.py"], {})
    assert str(caught.value).startswith(f"c.py: gunicorn setting {message}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("line", ['worker_class = "GThread"', "daemon = False", 'header_map = "drop"',
                                  'http_protocols = ["h1"]', "initgroups = True", "raw_paste_global_conf = []",
                                  'forwarder_headers = "SCRIPT_NAME,PATH_INFO"',
                                  'worker_class = "egg:gunicorn#sync"',
                                  'worker_class = "egg:gunicorn#gthread"',
                                  "paste = None", "reuse_port = False", "sendfile = True",
                                  "sendfile = None", 'logger_class = "gunicorn.glogging.Logger"',
                                  "tmp_upload_dir = None",
                                  "import ssl; ssl_version = ssl.PROTOCOL_TLS"])
def test_python_config_takes_gunicorn_values_that_describe_prefork_silently(tmp_path, config_warnings, line):
    write(tmp_path / "c.py", line + "\n")
    load_config(["-c", "c.py"], {})
    assert config_warnings() == []


def test_python_config_cannot_name_another_config_file(tmp_path, config_warnings):
    write(tmp_path / "c.py", 'config = "other.py"\n')
    assert load_config(["-c", "c.py"], {}).config == str(tmp_path / "c.py")
    assert config_warnings() == ["c.py: 'config' can only be given on the command line; ignored"]


def test_toml_file_top_level_keys_with_dashes_or_underscores(tmp_path):
    write(tmp_path / "prefork.toml", """
        workers = 4
        max-requests = 1000
        max_requests_jitter = 50
        graceful-timeout = 10
        preload-app = true
        bind = "127.0.0.1:9000"
        wsgi-app = "pkg.app:create()"
        umask = "0o007"
        cert-reqs = "CERT_OPTIONAL"
    """)
    cfg = load_config(["-c", "prefork.toml"], {})
    assert (cfg.workers, cfg.max_requests, cfg.max_requests_jitter, cfg.graceful_timeout) == \
        (4, 1000, 50, 10.0)
    assert (cfg.preload_app, cfg.bind, cfg.app) == (True, ["127.0.0.1:9000"], "pkg.app:create()")
    assert (cfg.umask, cfg.cert_reqs) == (0o007, 1)


def test_toml_file_with_a_tool_prefork_table(tmp_path):
    write(tmp_path / "deploy.toml", """
        [tool.prefork]
        workers = 7
        [tool.other]
        anything = "goes"
    """)
    assert load_config(["-c", "deploy.toml"], {}).workers == 7


def test_pyproject_tool_prefork_is_read_without_c(tmp_path):
    write(tmp_path / "pyproject.toml", """
        [project]
        name = "myproject"

        [tool.prefork]
        workers = 3
        bind = ["unix:/run/my.sock"]
    """)
    cfg = load_config([], {})
    assert (cfg.workers, cfg.bind, cfg.config) == (3, ["unix:/run/my.sock"],
                                                   str(tmp_path / "pyproject.toml"))
    assert load_config(["-w", "5"], {}).workers == 5


def test_pyproject_without_tool_prefork_changes_nothing(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    cfg = load_config([], {})
    assert cfg == Config()


def test_explicit_config_file_replaces_pyproject(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.prefork]\nworkers = 3\nthreads = 2\n")
    write(tmp_path / "other.toml", "workers = 4\n")
    cfg = load_config(["-c", "other.toml"], {})
    assert (cfg.workers, cfg.threads) == (4, 1)


def test_pyproject_given_with_c_needs_the_table(tmp_path):
    write(tmp_path / "pyproject.toml", "[project]\nname = 'x'\n")
    with pytest.raises(ConfigError, match=r"^pyproject.toml: no \[tool.prefork\] table$"):
        load_config(["-c", "pyproject.toml"], {})


# --- every bad input is one line naming the setting and the value --------------------------------

ERRORS = [
    # argv, environ, files {name: text}, exact message
    (["-w", "0"], {}, {}, "--workers: must be an integer >= 1 or auto, got '0'"),
    (["--workers=two"], {}, {}, "--workers: must be an integer >= 1 or auto, got 'two'"),
    (["--threads", "1.5"], {}, {}, "--threads: must be an integer >= 1, got '1.5'"),
    (["-t", "-1"], {}, {}, "--timeout: must be a number of seconds >= 0, got '-1'"),
    (["--keep-alive", "nan"], {}, {}, "--keep-alive: must be a number of seconds >= 0, got 'nan'"),
    (["--limit-request-line", "-1"], {}, {},
     "--limit-request-line: must be an integer >= 0, got '-1'"),
    (["--limit-request-field_size", "x"], {}, {},
     "--limit-request-field-size: must be an integer >= 0, got 'x'"),
    (["--log-level", "loud"], {}, {},
     "--log-level: must be one of debug, info, warning, error, critical, got 'loud'"),
    (["-b", "localhost:http"], {}, {},
     "--bind: cannot parse 'localhost:http': port must be a number 0-65535"),
    (["--metrics-bind", "::1"], {}, {},
     "--metrics-bind: cannot parse '::1': an IPv6 address needs brackets, as in [::1]:8000"),
    (["-m", "0o1000"], {}, {},
     "--umask: must be a umask from 0 to 0o777 (e.g. 0o22, 022 or 18), got '0o1000'"),
    (["--cert-reqs", "3"], {}, {},
     "--cert-reqs: must be 0, 1, 2 or CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED, got '3'"),
    (["--root-path", "api"], {}, {},
     "--root-path: must be empty or a path starting with '/', got 'api'"),
    (["--forwarded-allow-ips", "10.0.0.1,proxy"], {}, {},
     "--forwarded-allow-ips: must be comma-separated IP addresses or networks (or *), "
     "got '10.0.0.1,proxy'"),
    (["-u", "no-such-user-prefork"], {}, {}, "--user: no such user, got 'no-such-user-prefork'"),
    (["-g", "no-such-group-prefork"], {}, {},
     "--group: no such group, got 'no-such-group-prefork'"),
    (["--keyfile", "key.pem"], {}, {}, "--keyfile: needs --certfile as well, got only 'key.pem'"),
    (["--wrokers", "2", "app:x"], {}, {}, "unknown option --wrokers (did you mean --workers?)"),
    (["--preload-app"], {}, {}, "unknown option --preload-app (did you mean --preload?)"),
    (["--timout=3"], {}, {}, "unknown option --timout (did you mean --timeout?)"),
    (["app:a", "app:b"], {}, {}, "unexpected argument 'app:b'"),
    (["-w"], {}, {}, "argument -w/--workers: expected one argument"),
    ([], {"PREFORK_CMD_ARGS": "--workers 0"}, {},
     "PREFORK_CMD_ARGS: --workers: must be an integer >= 1 or auto, got '0'"),
    ([], {"PREFORK_CMD_ARGS": "--wrokers 2"}, {},
     "PREFORK_CMD_ARGS: unknown option --wrokers (did you mean --workers?)"),
    ([], {"PREFORK_CMD_ARGS": "--bind '127.0.0.1"}, {}, "PREFORK_CMD_ARGS: No closing quotation"),
    (["--proxy-protocol", "v3", "app:app"], {}, {},
     "--proxy-protocol: must be off, v1, v2 or auto (or true/false), got 'v3'"),
    (["--proxy-protocol=app:app"], {}, {},
     "--proxy-protocol: must be off, v1, v2 or auto (or true/false), got 'app:app'"),
    (["--proxy-protocol", "v3"], {"PREFORK_CMD_ARGS": "app:app"}, {},
     "--proxy-protocol: must be off, v1, v2 or auto (or true/false), got 'v3'"),
    (["-c", "c.py", "--proxy-protocol", "typo"], {}, {"c.py": "wsgi_app = 'app:app'\n"},
     "--proxy-protocol: must be off, v1, v2 or auto (or true/false), got 'typo'"),
    (["app:app"], {"PREFORK_CMD_ARGS": "--proxy-protocol of"}, {},
     "PREFORK_CMD_ARGS: --proxy-protocol: must be off, v1, v2 or auto (or true/false), got 'of'"),
    ([], {"GUNICORN_CMD_ARGS": "--proxy-protocol typo"}, {},
     "GUNICORN_CMD_ARGS: --proxy-protocol: must be off, v1, v2 or auto (or true/false), "
     "got 'typo'"),
    ([], {"WEB_CONCURRENCY": "lots"}, {}, "WEB_CONCURRENCY: must be an integer >= 1 or auto, got 'lots'"),
    ([], {"FORWARDED_ALLOW_IPS": "x"}, {},
     "FORWARDED_ALLOW_IPS: must be comma-separated IP addresses or networks (or *), got 'x'"),
    (["-c", "missing.py"], {}, {}, "--config: cannot read 'missing.py': No such file or directory"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": "workers = 4\nthreads = 2\nbind = = 1\n"},
     "config file prefork.toml: line 3, column 8: Invalid value"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": "workers = 4\nbind = [\n"},
     "config file prefork.toml: Invalid value (at end of document)"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": "wrokers = 4\n"},
     "prefork.toml: unknown setting 'wrokers' (did you mean 'workers'?)"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": "spew = true\n"},
     "prefork.toml: gunicorn setting 'spew' is not supported by prefork"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": "workers = 0\n"},
     "prefork.toml: workers: must be an integer >= 1 or auto, got 0"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": 'workers = "four"\n'},
     "prefork.toml: workers: must be an integer >= 1 or auto, got 'four'"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": "workers = 4.0\n"},
     "prefork.toml: workers: must be an integer >= 1 or auto, got 4.0"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": "preload = true\n"},
     "prefork.toml: unknown setting 'preload' (did you mean 'preload_app'?)"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": "preload_app = 1\n"},
     "prefork.toml: preload_app: must be true or false, got 1"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": "max-requests = 1\nmax_requests = 2\n"},
     "prefork.toml: 'max-requests' and 'max_requests' are the same setting"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": "config = 'x.py'\n"},
     "prefork.toml: 'config' can only be given on the command line"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": "post_fork = 'mod.func'\n"},
     "prefork.toml: post_fork: must be a function taking (server, worker), got 'mod.func'"),
    (["-c", "prefork.toml"], {}, {"prefork.toml": "bind = 8000\n"},
     "prefork.toml: bind: must be an address or a list of addresses, got 8000"),
    (["-c", "app.conf.py"], {}, {"app.conf.py": "workers = 2\nworkers = = 3\n"},
     "config file app.conf.py: line 2: SyntaxError: invalid syntax"),
    (["-c", "app.conf.py"], {}, {"app.conf.py": "workers = 2\n\nthreads = 1 / 0\n"},
     "config file app.conf.py: line 3: ZeroDivisionError: division by zero"),
    (["-c", "app.conf.py"], {}, {"app.conf.py": "import json\nworkers = json.loads('{')\n"},
     "config file app.conf.py: line 2: JSONDecodeError: Expecting property name enclosed in "
     "double quotes: line 1 column 2 (char 1)"),
    (["-c", "app.conf.py"], {}, {"app.conf.py": "timeout = '30s'\n"},
     "app.conf.py: timeout: must be a number of seconds >= 0, got '30s'"),
    (["-c", "app.conf.py"], {}, {"app.conf.py": "def post_fork(server):\n    pass\n"},
     "app.conf.py: post_fork: must be a function taking (server, worker), got post_fork(server)"),
    (["-c", "app.conf.py"], {}, {"app.conf.py": "on_starting = 5\n"},
     "app.conf.py: on_starting: must be a function taking (server), got 5"),
    (["-c", "app.conf.py"], {}, {"app.conf.py": "post_request = lambda: None\n"},
     "app.conf.py: post_request: must be a function taking (worker, req, environ, resp), "
     "got <lambda>()"),
    ([], {}, {"pyproject.toml": "[tool.prefork]\nworkers = -1\n"},
     "pyproject.toml: workers: must be an integer >= 1 or auto, got -1"),
]


@pytest.mark.parametrize(("argv", "environ", "files", "message"), ERRORS,
                         ids=[case[3][:50] for case in ERRORS])
def test_bad_input_is_one_line_naming_setting_and_value(tmp_path, argv, environ, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(argv, environ)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_help_and_version_exit_zero(capsys):
    with pytest.raises(SystemExit) as caught:
        load_config(["--help"], {})
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: prefork [OPTIONS] APP")
    for f in FIELDS:
        for flag in spec(f).flags:
            assert flag in out
    with pytest.raises(SystemExit) as caught:
        load_config(["--version"], {})
    assert caught.value.code == 0
    assert re.fullmatch(r"prefork \S+\n", capsys.readouterr().out)


# --- gunicorn compatibility ----------------------------------------------------------------------

GUNICORN_FLAGS = {
    "-c": "config", "--config": "config", "-b": "bind", "--bind": "bind", "--backlog": "backlog",
    "-w": "workers", "--workers": "workers", "--threads": "threads",
    "--max-requests": "max_requests", "--max-requests-jitter": "max_requests_jitter",
    "-t": "timeout", "--timeout": "timeout", "--graceful-timeout": "graceful_timeout",
    "--keep-alive": "keepalive", "--limit-request-line": "limit_request_line",
    "--limit-request-fields": "limit_request_fields",
    "--limit-request-field_size": "limit_request_field_size", "--reload": "reload",
    "--check-config": "check_config", "--print-config": "print_config", "--preload": "preload_app",
    "--chdir": "chdir", "-p": "pidfile", "--pid": "pidfile", "-u": "user", "--user": "user",
    "-g": "group", "--group": "group", "-m": "umask", "--umask": "umask",
    "--forwarded-allow-ips": "forwarded_allow_ips", "--access-logfile": "accesslog",
    "--access-logformat": "access_log_format", "--error-logfile": "errorlog",
    "--log-file": "errorlog", "--log-level": "loglevel", "--log-config": "logconfig",
    "-n": "proc_name", "--name": "proc_name", "--pythonpath": "pythonpath",
    "--proxy-protocol": "proxy_protocol", "--proxy-allow-from": "proxy_allow_ips",
    "--keyfile": "keyfile", "--certfile": "certfile", "--cert-reqs": "cert_reqs",
    "--ca-certs": "ca_certs", "--ciphers": "ciphers",
}


def test_gunicorn_flags_set_the_same_settings():
    destinations = {option: action.dest for action in build_parser()._actions
                    for option in action.option_strings}
    assert {flag: destinations.get(flag) for flag in GUNICORN_FLAGS} == GUNICORN_FLAGS


def test_a_gunicorn_command_line_loads(tmp_path):
    cfg = load_config(["-w", "4", "-b", "0.0.0.0:8000", "-b", "[::]:8000", "--threads=2",
                       "--max-requests", "1000", "--max-requests-jitter", "100", "-t", "120",
                       "--keep-alive", "2", "--access-logfile", "-", "--log-level", "debug",
                       "--preload", "-m", "007", "--forwarded-allow-ips", "*", "--cert-reqs", "2",
                       "-n", "api", "myproject.wsgi:application"], {})
    assert (cfg.workers, cfg.bind, cfg.threads, cfg.max_requests, cfg.timeout) == \
        (4, ["0.0.0.0:8000", "[::]:8000"], 2, 1000, 120.0)
    assert (cfg.accesslog, cfg.loglevel, cfg.preload_app, cfg.umask, cfg.cert_reqs) == \
        ("-", "debug", True, 0o7, 2)
    assert (cfg.app, cfg.proc_name, cfg.forwarded_allow_ips) == \
        ("myproject.wsgi:application", "api", "*")


def test_no_server_header_turns_the_default_off():
    assert load_config([], {}).server_header is True
    assert load_config(["--no-server-header"], {}).server_header is False


# --- value parsers -------------------------------------------------------------------------------

PARSED = [
    # setting, raw value (file / make_config / command line), parsed value
    ("umask", "0o22", 18), ("umask", "022", 18), ("umask", "18", 18), ("umask", 18, 18),
    ("umask", "0", 0), ("umask", "0x1f", 31), ("umask", 0o777, 0o777),
    ("cert_reqs", 0, 0), ("cert_reqs", "1", 1), ("cert_reqs", 2, 2),
    ("cert_reqs", "CERT_REQUIRED", 2), ("cert_reqs", "cert_optional", 1), ("cert_reqs", "none", 0),
    ("timeout", 5, 5.0), ("timeout", "2.5", 2.5), ("timeout", 0, 0.0),
    ("workers", "  8 ", 8), ("max_requests", 0, 0),
    ("preload_app", True, True), ("preload_app", "false", False), ("preload_app", "Yes", True),
    ("loglevel", "WARNING", "warning"),
    ("root_path", "/api/", "/api"), ("root_path", "", ""),
    ("accesslog", "", None), ("pidfile", None, None), ("accesslog", "-", "-"),
    ("bind", "127.0.0.1:1", ["127.0.0.1:1"]),
    ("bind", ("unix:/a", "fd://3"), ["unix:/a", "fd://3"]),
    ("pythonpath", ["lib", "vendor"], "lib,vendor"), ("pythonpath", "lib, vendor,", "lib,vendor"),
    ("forwarded_allow_ips", "10.0.0.0/8, ::1", "10.0.0.0/8,::1"),
    ("proxy_allow_ips", "*", "*"),
    ("user", 0, "0"), ("user", "root", "root"), ("group", "0", "0"),
]


@pytest.mark.parametrize(("name", "raw", "parsed"), PARSED,
                         ids=[f"{c[0]}={c[1]!r}" for c in PARSED])
def test_values_parse_to_the_setting_type(name, raw, parsed):
    assert getattr(make_config(**{name: raw}), name) == parsed


REJECTED = [
    ("umask", "0o1000"), ("umask", "089"), ("umask", -1), ("umask", True), ("umask", "rwx"),
    ("cert_reqs", 3), ("cert_reqs", True), ("cert_reqs", "maybe"),
    ("timeout", -1), ("timeout", "inf"), ("timeout", True), ("timeout", "soon"),
    ("workers", 0), ("workers", 4.0), ("workers", True), ("workers", "4.5"), ("workers", ""),
    ("backlog", None), ("preload_app", 1), ("preload_app", "maybe"), ("loglevel", "verbose"),
    ("errorlog", ""), ("accesslog", 5), ("root_path", "api"), ("bind", [""]), ("bind", [1]),
    ("forwarded_allow_ips", "10.0.0.300"), ("control_socket", ""),
]


@pytest.mark.parametrize(("name", "raw"), REJECTED, ids=[f"{c[0]}={c[1]!r}" for c in REJECTED])
def test_bad_values_are_rejected_naming_setting_and_value(name, raw):
    with pytest.raises(ConfigError) as caught:
        make_config(**{name: raw})
    assert str(caught.value).startswith(f"{name}: ")
    assert str(caught.value).endswith(f"got {raw!r}")


def test_make_config_is_the_python_api(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    cfg = make_config(wsgi_app="app:wsgi", timeout=10, bind="unix:/tmp/s.sock")
    assert (cfg.app, cfg.timeout, cfg.bind, cfg.workers) == \
        ("app:wsgi", 10.0, ["unix:/tmp/s.sock"], 5)
    assert make_config(app="a:b").app == "a:b"
    with pytest.raises(ConfigError,
                       match=r"^unknown setting 'wrokers' \(did you mean 'workers'\?\)$"):
        make_config(wrokers=2)
    with pytest.raises(ConfigError, match=r"^bind: cannot|^--bind: cannot parse 'nope:x'"):
        make_config(bind="nope:x")


def test_hooks_are_validated_and_post_request_is_adapted():
    seen = []
    cfg = make_config(post_request=lambda worker, req, environ: seen.append((worker, req, environ)),
                      pre_fork=lambda server, worker: None)
    cfg.post_request("w", "r", "e", "resp")
    assert seen == [("w", "r", "e")]
    with pytest.raises(ConfigError,
                       match=r"^pre_fork: must be a function taking \(server, worker\)"):
        make_config(pre_fork=lambda server: None)
    with pytest.raises(ConfigError,
                       match=r"^post_worker_init: must be a function taking \(worker\)"):
        make_config(post_worker_init="not callable")


# --- generated surfaces --------------------------------------------------------------------------

def test_print_config_output_is_sorted_without_hooks_and_loads_back(tmp_path):
    cfg = load_config(["-w", "3", "-b", "127.0.0.1:1", "--access-logformat", "%(h)s 'x'",
                       "-m", "022", "--preload", "--root-path", "/api", "app:make('x')"], {})
    text = format_config(cfg)
    lines = text.splitlines()
    assert lines == sorted(lines)
    assert "workers = 3" in lines and "bind = ['127.0.0.1:1']" in lines
    assert not any(line.split(" = ")[0] in {"post_fork", "on_starting"} for line in lines)
    assert len(lines) == sum(not is_hook(f) and f.name not in INVOCATION_ONLY for f in FIELDS)
    write(tmp_path / "printed.py", text)
    again = load_config(["-c", "printed.py"], {})
    for f in FIELDS:
        if not is_hook(f) and f.name != "config":
            assert getattr(again, f.name) == getattr(cfg, f.name), f.name


def test_print_config_of_print_config_loads_back_as_a_server_config(tmp_path, monkeypatch):
    """What `prefork --print-config ... > f.py` writes: not print_config = True (a server
    started from it would print itself and exit), the binds the default resolves to rather
    than `bind = []`, and a note for each hook it cannot print."""
    write(tmp_path / "hooks.py", "workers = 2\ndef post_fork(server, worker):\n    pass\n")
    cfg = load_config(["--print-config", "-c", str(tmp_path / "hooks.py"), "-e", "A=1", "app:app"],
                      {"PORT": "5000"})
    text = format_config(cfg, {"PORT": "5000"})
    names = {line.split(" = ")[0] for line in text.splitlines() if not line.startswith("#")}
    assert not names & {"print_config", "check_config", "config"}
    assert "bind = ['0.0.0.0:5000']" in text.splitlines()
    assert text.splitlines()[-1] == f"# post_fork: a hook set in {tmp_path / 'hooks.py'}, not printed"
    write(tmp_path / "printed.py", text)
    again = load_config(["-c", str(tmp_path / "printed.py")], {})
    assert (again.print_config, again.workers, again.raw_env, again.bind, again.app) == (
        False, 2, ["A=1"], ["0.0.0.0:5000"], "app:app")


def test_settings_reference_lists_every_setting_deterministically():
    markdown = settings_reference_markdown()
    assert markdown == settings_reference_markdown()
    rows = markdown.splitlines()
    assert rows[0] == "| Flag | Setting | Default | Description |"
    assert len(rows) == len(FIELDS) + 2
    for row, f in zip(rows[2:], FIELDS):
        cells = re.split(r"(?<!\\)\|", row)[1:-1]  # unescaped pipes separate the 4 cells
        assert len(cells) == 4, row
        assert f"`{f.name}" in cells[1]
        for flag in spec(f).flags:
            assert f"`{flag}`" in cells[0]
    assert "2-4 x the number of CPU cores" in markdown


CONTRACT = {  # the interface other packages code against (notes/brief.md): name -> default
    "app": None, "bind": [], "workers": 1, "threads": 1, "timeout": 30, "graceful_timeout": 30,
    "keepalive": 5, "backlog": 2048, "loglevel": "info", "accesslog": None, "errorlog": "-",
    "access_log_format": '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
    "access_log_json": False, "logconfig": None, "proc_name": None, "config": None,
    "check_config": False, "print_config": False, "chdir": None, "pythonpath": None,
    "limit_request_line": 4094, "limit_request_fields": 100, "limit_request_field_size": 8190,
    "limit_request_body": 0, "head_timeout": 10, "body_timeout": 30, "lingering_time": 30,
    "request_buffering": True, "body_buffer_size": 65536, "response_buffer_size": 262144,
    "response_spool_max": 1 << 30, "worker_buffer_memory": 64 << 20, "worker_tmp_dir": None,
    "worker_connections": 0,
    "forwarded_allow_ips": "127.0.0.1,::1", "root_path": "", "server_header": True,
    "max_requests": 0, "max_requests_jitter": 0, "max_worker_memory": 0, "preload_app": False,
    "pidfile": None, "user": None, "group": None, "umask": None, "reload": False, "certfile": None,
    "raw_env": [],
    "keyfile": None, "ca_certs": None, "cert_reqs": 0, "ciphers": None, "proxy_protocol": False,
    "proxy_allow_ips": "127.0.0.1,::1", "control_socket": "auto", "metrics_bind": None,
    "reload_extra_files": [], "reload_engine": "auto", "logconfig_dict": None,
    "logconfig_json": None, "syslog": False, "syslog_addr": "udp://localhost:514",
    "syslog_prefix": None, "syslog_facility": "user", "disable_redirect_access_to_syslog": False,
    "capture_output": False, "statsd_host": None, "statsd_prefix": "", "dogstatsd_tags": "",
    "enable_backlog_metric": False,
    "shutdown_delay": 0, "health_path": None,
}
HOOK_ARITY = {"on_starting": 1, "when_ready": 1, "on_reload": 1, "pre_fork": 2, "post_fork": 2,
              "post_worker_init": 1, "pre_request": 2, "post_request": 4, "worker_exit": 2,
              "on_exit": 1, "worker_int": 1, "worker_abort": 1, "child_exit": 2,
              "nworkers_changed": 3, "pre_exec": 1}


def test_config_matches_the_interface_contract():
    cfg = Config()
    assert {f.name for f in FIELDS} == set(CONTRACT) | set(HOOK_ARITY) | {"ssl_context"}
    # gunicorn's default ssl_context returns what the factory builds
    assert cfg.ssl_context(cfg, lambda: "the settings' context") == "the settings' context"
    assert {name: getattr(cfg, name) for name in CONTRACT} == CONTRACT
    for name, arity in HOOK_ARITY.items():
        assert getattr(cfg, name)(*range(arity)) is None
        with pytest.raises(ValueError, match="must be a function taking"):
            spec(settings.BY_NAME[name]).parse(lambda: None)


def test_every_setting_is_fully_described():
    flags = [flag for f in FIELDS for flag in spec(f).flags]
    assert len(flags) == len(set(flags))
    for f in FIELDS:
        info = spec(f)
        assert info.short and info.section and callable(info.parse), f.name
        assert info.flags or is_hook(f) or f.name in ("app", "logconfig_dict"), f.name
        if not is_hook(f) and info.default_doc is None:
            assert info.parse(settings.default_value(f)) == settings.default_value(f), f.name


@pytest.mark.parametrize(("argv", "environ", "expected"), [
    ([], {"SCRIPT_NAME": "/api/"}, "/api"),
    (["-e", "SCRIPT_NAME=/shop"], {"SCRIPT_NAME": "/api"}, "/shop"),
    (["-e", "SCRIPT_NAME=/a", "-e", "SCRIPT_NAME=/b"], {}, "/b"),
    (["--root-path", ""], {"SCRIPT_NAME": "/api"}, ""),       # explicitly none
    ([], {"PREFORK_CMD_ARGS": "--root-path /v2", "SCRIPT_NAME": "/api"}, "/v2"),
    ([], {"SCRIPT_NAME": ""}, ""),
])
def test_script_name_is_the_default_root_path(argv, environ, expected):
    assert load_config([*argv, "app:app"], environ).root_path == expected


def test_script_name_in_a_config_files_raw_env_and_make_config(tmp_path, monkeypatch):
    write(tmp_path / "c.py", 'raw_env = ["SCRIPT_NAME=/file"]\n')
    assert load_config(["-c", "c.py", "app:app"], {}).root_path == "/file"
    assert load_config(["-c", "c.py", "--root-path", "/flag", "app:app"], {}).root_path == "/flag"
    monkeypatch.setenv("SCRIPT_NAME", "/api")
    assert make_config(app="app:app").root_path == "/api"
    assert make_config(app="app:app", root_path="/x").root_path == "/x"


def test_a_malformed_inherited_script_name_is_ignored_with_a_warning(config_warnings):
    """An inherited variable must not stop a server; -e SCRIPT_NAME=... was asked for here."""
    assert load_config(["app:app"], {"SCRIPT_NAME": "api"}).root_path == ""
    assert config_warnings() == ["SCRIPT_NAME in the environment is ignored: must be empty or "
                                 "a path starting with '/', got 'api'"]
    with pytest.raises(ConfigError, match=r"^SCRIPT_NAME: must be empty or a path starting"):
        load_config(["-e", "SCRIPT_NAME=api", "app:app"], {"SCRIPT_NAME": "/ok"})


def test_gunicorns_control_socket_disable_turns_the_control_socket_off(tmp_path, config_warnings):
    """gunicorn's --no-control-socket / control_socket_disable = True is --control-socket off."""
    assert load_config(["--no-control-socket", "app:app"], {}).control_socket == "off"
    assert load_config(["--control-socket", "/x.sock", "--no-control-socket", "app:app"],
                       {}).control_socket == "off"
    write(tmp_path / "c.py", "control_socket_disable = True\ncontrol_socket = '/x.sock'\n")
    assert load_config(["-c", "c.py", "app:app"], {}).control_socket == "off"
    assert load_config(["-c", "c.py", "--control-socket", "/y.sock", "app:app"],
                       {}).control_socket == "/y.sock"
    assert config_warnings() == []


def test_did_you_mean_knows_gunicorns_flags():
    with pytest.raises(ConfigError, match=r"^unknown option --no-sendfiles \(did you mean "
                                          r"--no-sendfile\?\)$"):
        load_config(["--no-sendfiles", "app:app"], {})
