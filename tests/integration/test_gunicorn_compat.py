"""Moving from gunicorn: its flags and config-file names work unchanged for every setting
prefork has; a gunicorn config file loads and serves with the real ``prefork`` command; the
settings prefork lacks are warned about, one line each, never a crash; and
docs/from-gunicorn.md accounts for every gunicorn setting.

The list of gunicorn's settings is config/gunicorn.py, which also generates the doc's tables
and decides what a config file's gunicorn-only names do; the tests below hold each row of it
to the code.
"""

from __future__ import annotations

import ast
import os
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from conftest import APPS, START_TIMEOUT, base_env, prefork_command, stop_orphan, wait_for
from prefork.config.cli import load_config
from prefork.config.gunicorn import GUNICORN, unsupported
from prefork.config.settings import BY_NAME, ConfigError, lookup, spec

DOC = Path(__file__).resolve().parents[2] / "docs" / "from-gunicorn.md"
PREFORK = Path(sys.executable).with_name("prefork")  # the console script pip installed
STOP_TIMEOUT = 15.0

ALL_GUNICORN = list(GUNICORN)  # config/gunicorn.py: gunicorn 27.0.1's settings reference

# gunicorn settings prefork has, under gunicorn's config-file name (wsgi_app is an alias).
SHARED = ["config", "wsgi_app", "control_socket", "reload", "check_config", "print_config",
          "accesslog", "access_log_format", "errorlog", "loglevel", "logconfig", "proc_name",
          "keyfile", "certfile", "cert_reqs", "ca_certs", "ciphers", "limit_request_line",
          "limit_request_fields", "limit_request_field_size", "on_starting", "on_reload",
          "when_ready", "pre_fork", "post_fork", "post_worker_init", "pre_request",
          "post_request", "worker_exit", "on_exit", "preload_app", "chdir", "pidfile", "user",
          "group", "umask", "forwarded_allow_ips", "pythonpath", "proxy_protocol",
          "proxy_allow_ips", "root_path", "bind", "backlog", "workers", "threads",
          "max_requests", "max_requests_jitter", "timeout", "graceful_timeout", "keepalive",
          "raw_env", "worker_connections", "worker_tmp_dir", "reload_engine", "reload_extra_files",
          "logconfig_dict", "logconfig_json", "syslog", "syslog_addr", "syslog_prefix",
          "syslog_facility", "disable_redirect_access_to_syslog", "capture_output", "statsd_host",
          "statsd_prefix", "dogstatsd_tags",
          "worker_int", "worker_abort", "pre_exec", "child_exit", "nworkers_changed", "ssl_context",
          "enable_backlog_metric"]


# gunicorn's command line, as its reference spells it -> (setting, value prefork makes of it)
GUNICORN_FLAGS: list[tuple[list[str], str, Any]] = [
    (["-b", "127.0.0.1:9000"], "bind", ["127.0.0.1:9000"]),
    (["--bind", "unix:/tmp/app.sock"], "bind", ["unix:/tmp/app.sock"]),
    (["--backlog", "64"], "backlog", 64),
    (["-w", "4"], "workers", 4),
    (["-e", "DJANGO_SETTINGS_MODULE=site.settings"], "raw_env", ["DJANGO_SETTINGS_MODULE=site.settings"]),
    (["--env", "A=1", "--env", "B=x=y"], "raw_env", ["A=1", "B=x=y"]),
    (["--workers", "4"], "workers", 4),
    (["--threads", "8"], "threads", 8),
    (["--max-requests", "1000"], "max_requests", 1000),
    (["--max-requests-jitter", "50"], "max_requests_jitter", 50),
    (["-t", "120"], "timeout", 120.0),
    (["--timeout", "120"], "timeout", 120.0),
    (["--graceful-timeout", "45"], "graceful_timeout", 45.0),
    (["--keep-alive", "75"], "keepalive", 75.0),
    (["--limit-request-line", "8190"], "limit_request_line", 8190),
    (["--limit-request-fields", "32"], "limit_request_fields", 32),
    (["--limit-request-field_size", "16380"], "limit_request_field_size", 16380),
    (["--reload"], "reload", True),
    (["--check-config"], "check_config", True),
    (["--print-config"], "print_config", True),
    (["--preload"], "preload_app", True),
    (["--chdir", "/srv/app"], "chdir", "/srv/app"),
    (["-p", "/run/app.pid"], "pidfile", "/run/app.pid"),
    (["--pid", "/run/app.pid"], "pidfile", "/run/app.pid"),
    (["-u", "0"], "user", "0"),
    (["--user", "root"], "user", "root"),
    (["-g", "0"], "group", "0"),
    (["--group", "0"], "group", "0"),
    (["-m", "0022"], "umask", 0o22),
    (["--umask", "0o007"], "umask", 0o7),
    (["--pythonpath", "/srv/lib,/srv/vendor"], "pythonpath", "/srv/lib,/srv/vendor"),
    (["--forwarded-allow-ips", "10.0.0.0/8,*"], "forwarded_allow_ips", "10.0.0.0/8,*"),
    (["--proxy-protocol"], "proxy_protocol", True),
    (["--proxy-protocol", "v2"], "proxy_protocol", True),
    (["--proxy-protocol", "v1"], "proxy_protocol", True),
    (["--proxy-protocol=auto"], "proxy_protocol", True),
    (["--proxy-protocol", "off"], "proxy_protocol", False),
    (["--proxy-allow-from", "10.0.0.1"], "proxy_allow_ips", "10.0.0.1"),
    (["--root-path", "/api"], "root_path", "/api"),
    (["--log-config", "logging.json"], "logconfig", "logging.json"),
    (["--access-logfile", "-"], "accesslog", "-"),
    (["--access-logformat", "%(h)s %(r)s %(s)s"], "access_log_format", "%(h)s %(r)s %(s)s"),
    (["--error-logfile", "/var/log/app.log"], "errorlog", "/var/log/app.log"),
    (["--log-file", "/var/log/app.log"], "errorlog", "/var/log/app.log"),
    (["--log-level", "DEBUG"], "loglevel", "debug"),
    (["-n", "shop"], "proc_name", "shop"),
    (["--name", "shop"], "proc_name", "shop"),
    (["--keyfile", "key.pem", "--certfile", "cert.pem"], "keyfile", "key.pem"),
    (["--certfile", "cert.pem"], "certfile", "cert.pem"),
    (["--ca-certs", "ca.pem"], "ca_certs", "ca.pem"),
    (["--cert-reqs", "2"], "cert_reqs", 2),
    (["--ciphers", "ECDHE+AESGCM"], "ciphers", "ECDHE+AESGCM"),
    (["--control-socket", "/run/app.ctl"], "control_socket", "/run/app.ctl"),
    (["--worker-connections", "1000"], "worker_connections", 1000),
    (["--worker-tmp-dir", "/var/tmp"], "worker_tmp_dir", "/var/tmp"),
    (["--reload-engine", "poll"], "reload_engine", "poll"),
    (["--reload-extra-file", str(APPS / "basic.py"), "--reload-extra-file", str(APPS / "osenv.py")],
     "reload_extra_files", [str(APPS / "basic.py"), str(APPS / "osenv.py")]),
    (["--log-config-json", "logging.json"], "logconfig_json", "logging.json"),
    (["--log-syslog"], "syslog", True),
    (["--log-syslog-to", "udp://127.0.0.1:514"], "syslog_addr", "udp://127.0.0.1:514"),
    (["--log-syslog-prefix", "shop"], "syslog_prefix", "shop"),
    (["--log-syslog-facility", "local0"], "syslog_facility", "local0"),
    (["--disable-redirect-access-to-syslog"], "disable_redirect_access_to_syslog", True),
    (["--capture-output"], "capture_output", True),
    (["--statsd-host", "127.0.0.1:8125"], "statsd_host", "127.0.0.1:8125"),
    (["--statsd-prefix", "shop"], "statsd_prefix", "shop"),
    (["--dogstatsd-tags", "env:prod"], "dogstatsd_tags", "env:prod"),
    (["--enable-backlog-metric"], "enable_backlog_metric", True),
]


# -- names and flags --------------------------------------------------------------------------

@pytest.mark.parametrize("name", SHARED)
def test_shared_setting_keeps_gunicorns_config_file_name(name: str) -> None:
    assert lookup(name) == ("app" if name == "wsgi_app" else name)


@pytest.mark.parametrize(("args", "name", "expected"), GUNICORN_FLAGS,
                         ids=[" ".join(args) for args, _, _ in GUNICORN_FLAGS])
def test_gunicorn_flag_means_the_same(args: list[str], name: str, expected: Any) -> None:
    cfg = load_config([*args, "basic:app"], environ={})
    assert getattr(cfg, name) == expected


def test_every_shared_setting_with_a_flag_is_in_the_flag_table() -> None:
    """A setting added to both servers without a row above would go untested."""
    covered = {name for _, name, _ in GUNICORN_FLAGS}
    with_flags = {lookup(name) for name in SHARED if spec(BY_NAME[lookup(name)]).flags}
    assert with_flags - {"config"} <= covered


# -- docs/from-gunicorn.md ----------------------------------------------------------------------

_ROW = re.compile(r"^\| `(?P<name>[a-z0-9_]+)` \|(?P<rest>.*)\|\s*$")


def _doc_rows() -> dict[str, str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            assert match["name"] not in rows, f"{match['name']} has two rows"
            rows[match["name"]] = match["rest"]
    return rows


def test_doc_has_a_row_for_every_gunicorn_setting() -> None:
    rows = _doc_rows()
    assert set(ALL_GUNICORN) - set(rows) == set()
    assert set(rows) - set(ALL_GUNICORN) == set()


@pytest.mark.parametrize("name", [name for name in GUNICORN if unsupported(name)])
def test_unsupported_gunicorn_setting_does_what_its_row_says(name: str, tmp_path: Path, caplog) -> None:
    """A refused row: a config file that sets it does not load. Any other row: one warning.
    A value the row calls harmless: no message. (The doc's tables are generated from the rows.)"""
    entry = GUNICORN[name]
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(f"{name} = 'a value prefork does not have'\n")
    caplog.set_level("WARNING", logger="prefork.error")
    if entry.refused:
        with pytest.raises(ConfigError, match=f"gunicorn setting {name} = .* is refused by prefork: "):
            load_config(["-c", str(config), "basic:app"], environ={})
    else:
        load_config(["-c", str(config), "basic:app"], environ={})
        assert [r.getMessage() for r in caplog.records] == [
            f"{config}: gunicorn setting {name!r} is not supported by prefork; ignored ({entry.instead})"]
    for value in entry.harmless:
        caplog.clear()
        config.write_text(f"{name} = {value!r}\n")
        load_config(["-c", str(config), "basic:app"], environ={})
        assert caplog.records == []


def test_doc_names_only_real_prefork_settings() -> None:
    """The second column is the prefork setting (`name` and its flag), or why there is none."""
    for gunicorn_name, rest in _doc_rows().items():
        prefork_cell = rest.split("|")[1].strip()
        names = re.findall(r"`([a-z_]+)`", prefork_cell)
        for name in names:
            assert lookup(name) is not None, f"{gunicorn_name}: {name!r} is not a prefork setting"
        shared = gunicorn_name in SHARED
        assert bool(names) == shared, f"{gunicorn_name}: {prefork_cell!r}"


# -- a gunicorn config file, with the real command ---------------------------------------------

def _prefork(config: Path, listener: socket.socket, log_path: Path,
             **env: str) -> subprocess.Popen:
    """``prefork -c CONFIG basic:app`` from tests/apps, its stderr (the error log) in
    ``log_path``; the config's bind names the socket bound here, which prefork adopts from
    PREFORK_FD."""
    assert PREFORK.exists(), f"the prefork console script is not installed next to {sys.executable}"
    host, port = listener.getsockname()
    full_env = base_env(PREFORK_FD=str(listener.fileno()), GUNICORN_BIND=f"{host}:{port}", **env)
    with open(log_path, "wb") as log_file, open(log_path.with_suffix(".out"), "wb") as out:
        return subprocess.Popen([str(PREFORK), "-c", str(config), "basic:app"], cwd=APPS,
                                env=full_env, pass_fds=(listener.fileno(),), stdout=out,
                                stderr=log_file)


def _children(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(proc.pid).children() if c.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def _started(proc: subprocess.Popen, count: int) -> list[psutil.Process] | None:
    """The workers, once ``count`` of them carry a worker's process title: it is set after a
    new worker has traded the arbiter's signal handlers for its own, so a TERM sent from then
    on reaches the worker's handler."""
    workers = [child for child in _children(proc)
               if " ".join(child.cmdline()).startswith("prefork: worker")]
    return workers if len(workers) == count else None


def _get(port: int) -> requests.Response | None:
    try:
        # Connection: close, or TERM would wait out the idle keep-alive connection.
        return requests.get(f"http://127.0.0.1:{port}/", timeout=2,
                            headers={"Connection": "close"})
    except requests.RequestException:
        return None


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT)
    finally:
        _kill(proc)


def _kill(proc: subprocess.Popen) -> None:
    """Whatever a test left running: the arbiter and its workers, killed and reaped."""
    if proc.poll() is None:
        for child in _children(proc):
            child.kill()
        proc.kill()
        proc.wait()


def _events(hooks: Path, name: str) -> set[str]:
    """The pids (or first words) recorded by gunicorn_conf.py's hook `name`."""
    if not hooks.exists():
        return set()
    return {line.split()[1] for line in hooks.read_text().splitlines()
            if line.startswith(name + " ")}


def test_gunicorn_config_file_serves_unchanged(listener: socket.socket, tmp_path: Path) -> None:
    config = tmp_path / "gunicorn.conf.py"
    shutil.copy(APPS / "gunicorn_conf.py", config)
    hooks, access, pidfile, log = (tmp_path / "hooks.log", tmp_path / "access.log",
                                   tmp_path / "app.pid", tmp_path / "prefork.log")
    proc = _prefork(config, listener, log, GUNICORN_HOOK_LOG=str(hooks),
                    GUNICORN_ACCESS_LOG=str(access), GUNICORN_PIDFILE=str(pidfile))
    port = listener.getsockname()[1]
    try:
        response = wait_for(lambda: _get(port), START_TIMEOUT, message="the first response")
        assert response.text == "Hello, world!\n"  # type: ignore[union-attr]

        def three_initialised() -> set[str] | None:
            pids = _events(hooks, "post_worker_init")
            return pids if len(pids) == 3 else None

        initialised = wait_for(three_initialised, START_TIMEOUT,
                               message="workers = 3 from the config file, each initialised")
        workers = _children(proc)
        assert {str(worker.pid) for worker in workers} == initialised
        assert wait_for(lambda: _events(hooks, "when_ready"), START_TIMEOUT,
                        message="when_ready") == {str(proc.pid)}
        assert pidfile.read_text().strip() == str(proc.pid)
        titles = {" ".join(worker.cmdline()).strip() for worker in workers}
        assert {title.split(" [")[-1] for title in titles} == {"gunicorn-compat]"}
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert "WARNING" not in output and "Exception in" not in output, output
    events = hooks.read_text().splitlines()
    assert events[:2] == ["nworkers_changed 3 None", f"on_starting {proc.pid}"]  # gunicorn's order
    assert _events(hooks, "post_fork") == initialised
    assert "pre_request GET /" in events and "post_request / /" in events
    assert _events(hooks, "worker_exit") == initialised
    assert _events(hooks, "child_exit") == initialised
    assert not _events(hooks, "worker_int") and not _events(hooks, "worker_abort")  # TERM: neither
    assert events[-1] == f"on_exit {proc.pid}"
    access_lines = access.read_text().splitlines()
    assert any(re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "GET / HTTP/1\.1" 200 14 "-" '
                            r'"python-requests/[^"]+" \d+', line) for line in access_lines), access_lines


def _copy_config(tmp_path: Path) -> tuple[Path, Path]:
    """gunicorn_conf.py copied unchanged, and the file its hooks record to."""
    config = tmp_path / "gunicorn.conf.py"
    shutil.copy(APPS / "gunicorn_conf.py", config)
    return config, tmp_path / "hooks.log"


def _lines(hooks: Path, name: str) -> list[str]:
    """What gunicorn_conf.py's hook ``name`` recorded, one string per call, without the name."""
    if not hooks.exists():
        return []
    return [line.split(" ", 1)[1] for line in hooks.read_text().splitlines() if line.startswith(name + " ")]


def test_child_exit_nworkers_changed_and_worker_int_from_a_gunicorn_config(
        listener: socket.socket, tmp_path: Path) -> None:
    """kill -9 a worker: child_exit gets its pid; TTIN/TTOU: nworkers_changed gets the new and
    old counts; INT (fast stop): worker_int runs in each worker."""
    config, hooks = _copy_config(tmp_path)
    log = tmp_path / "prefork.log"
    proc = _prefork(config, listener, log, GUNICORN_HOOK_LOG=str(hooks))
    try:
        workers = wait_for(lambda: _started(proc, 3), START_TIMEOUT, message="3 workers")
        killed = workers[0].pid  # type: ignore[index]
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: _lines(hooks, "child_exit"), START_TIMEOUT, message="child_exit")
        (pid, age), = (line.split() for line in _lines(hooks, "child_exit"))
        assert int(pid) == killed and 1 <= int(age) <= 3
        wait_for(lambda: _started(proc, 3), START_TIMEOUT, message="the killed worker replaced")
        assert _lines(hooks, "nworkers_changed") == ["3 None"]

        proc.send_signal(signal.SIGTTIN)
        wait_for(lambda: _started(proc, 4), START_TIMEOUT, message="a 4th worker")
        proc.send_signal(signal.SIGTTOU)
        wait_for(lambda: len(_lines(hooks, "child_exit")) == 2, START_TIMEOUT,
                 message="the oldest worker retired")
        assert _lines(hooks, "nworkers_changed") == ["3 None", "4 3", "3 4"]
        serving = {str(worker.pid) for worker in _children(proc)}
        assert len(serving) == 3

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=STOP_TIMEOUT) == 0
    finally:
        _kill(proc)
    assert set(_lines(hooks, "worker_int")) == serving
    assert {line.split()[0] for line in _lines(hooks, "child_exit")} >= serving
    assert "Exception in" not in log.read_text()


def test_worker_abort_runs_when_a_hung_worker_is_aborted(listener: socket.socket,
                                                        tmp_path: Path) -> None:
    config, hooks = _copy_config(tmp_path)
    log = tmp_path / "prefork.log"
    proc = _prefork(config, listener, log, GUNICORN_HOOK_LOG=str(hooks),
                    PREFORK_CMD_ARGS="--timeout 1 --workers 1")
    port = listener.getsockname()[1]
    try:
        (worker,) = wait_for(lambda: _started(proc, 1), START_TIMEOUT, message="1 worker")  # type: ignore[misc]
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/sleep?60", timeout=30)
        assert wait_for(lambda: _lines(hooks, "worker_abort"), START_TIMEOUT,
                        message="worker_abort") == [str(worker.pid)]
        wait_for(lambda: _get(port), START_TIMEOUT, message="a new worker's response")
        assert _stop(proc) == 0
    finally:
        _kill(proc)
    output = log.read_text()
    assert "in sleep" in output  # the stuck stack is still written first
    assert f"Worker (pid: {worker.pid}) was aborted after its heartbeat timed out" in output
    assert _lines(hooks, "child_exit")[0].split()[0] == str(worker.pid)


def test_pre_exec_runs_in_the_child_that_becomes_the_new_arbiter(listener: socket.socket,
                                                                 tmp_path: Path) -> None:
    config, hooks = _copy_config(tmp_path)
    pidfile = tmp_path / "app.pid"
    proc = _prefork(config, listener, tmp_path / "prefork.log", GUNICORN_HOOK_LOG=str(hooks),
                    GUNICORN_PIDFILE=str(pidfile))
    new_pid = 0
    try:
        wait_for(lambda: _started(proc, 3), START_TIMEOUT, message="3 workers")
        proc.send_signal(signal.SIGUSR2)
        assert proc.wait(timeout=40) == 0  # the old arbiter hands over and leaves
        new_pid = int(pidfile.read_text())
        assert _lines(hooks, "pre_exec") == [f"{proc.pid} {new_pid}"]
        assert _get(listener.getsockname()[1]) is not None
    finally:
        _kill(proc)
        if new_pid:
            stop_orphan(new_pid)


def test_unsupported_gunicorn_settings_warn_once_each(listener: socket.socket,
                                                      tmp_path: Path) -> None:
    config = tmp_path / "gunicorn.conf.py"
    shutil.copy(APPS / "gunicorn_conf_unsupported.py", config)
    unsupported = runpy.run_path(str(config))["UNSUPPORTED"]
    stderr = tmp_path / "prefork.log"
    proc = _prefork(config, listener, stderr)
    port = listener.getsockname()[1]
    try:
        response = wait_for(lambda: _get(port), START_TIMEOUT, message="the first response")
        assert response.status_code == 200  # type: ignore[union-attr]
        wait_for(lambda: _started(proc, 2), START_TIMEOUT, message="2 workers")
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    warnings = [line for line in stderr.read_text().splitlines() if "ignored" in line]
    for name in unsupported:
        naming = [line for line in warnings if f"'{name}'" in line]
        assert len(naming) == 1, (name, warnings)
    assert len(warnings) == len(unsupported), warnings


def test_hooks_logging_through_server_log_work(listener: socket.socket, tmp_path: Path) -> None:
    log = tmp_path / "prefork.log"
    proc = _prefork(APPS / "gunicorn_conf_example.py", listener, log)
    port = listener.getsockname()[1]
    try:
        # Until it answers, or a hook's traceback shows that it will not.
        response = wait_for(lambda: "Traceback" in log.read_text() or _get(port),
                            START_TIMEOUT, message="the first response or a traceback")
        assert isinstance(response, requests.Response), log.read_text()
        assert response.status_code == 200
        wait_for(lambda: _started(proc, 1), START_TIMEOUT, message="1 worker")
        assert _stop(proc) == 0
    finally:
        _kill(proc)
    output = log.read_text()
    assert "Server is ready. Spawning workers" in output
    assert "Worker spawned (pid: " in output and "Worker initialised (pid: " in output
    assert "Exception in" not in output


@pytest.mark.parametrize("line", [
    "proxy_protocol = 'v1'",
    "limit_request_line = 0",
    "limit_request_field_size = 0",
    "proxy_protocol = True",
    "cert_reqs = __import__('ssl').CERT_REQUIRED",
    "umask = 0o027",
    "bind = ['127.0.0.1:8001', 'unix:/tmp/gunicorn.sock']",
    "worker_class = 'gthread'",
    "loglevel = 'WARNING'",
])
def test_gunicorn_values_of_shared_settings_load(line: str, tmp_path: Path) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(line + "\n")
    try:
        load_config(["-c", str(config), "basic:app"], environ={})
    except ConfigError as exc:
        pytest.fail(f"a valid gunicorn config line was refused: {exc}")


def test_pythonpath_comes_before_the_chdir_directory_last_entry_first(start_server,
                                                                      tmp_path: Path) -> None:
    """gunicorn inserts the --chdir directory at sys.path[0], then each --pythonpath entry at
    sys.path[0] in turn: `same` is found in lib2 (the last entry), `which` in lib1 rather than
    in the project directory."""
    project, lib1, lib2 = tmp_path / "project", tmp_path / "lib1", tmp_path / "lib2"
    for directory in (project, lib1, lib2):
        directory.mkdir()
        (directory / "which.py").write_text(f"NAME = {directory.name!r}\n")
        (directory / "same.py").write_text(
            "import which\n\n\n"
            "def app(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            f"    return [b'{directory.name} ' + which.NAME.encode()]\n")
    (lib2 / "which.py").unlink()
    server = start_server("same:app", "--chdir", str(project), "--pythonpath", "../lib1,../lib2",
                          workers=1)
    assert server.get("/").text == "lib2 lib1"


def _check_config(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``prefork --check-config -c CONFIG ... basic:app`` from tests/apps, as a deploy script runs it."""
    return subprocess.run(prefork_command("--check-config", "-c", str(config), *args, "basic:app"),
                          cwd=APPS, env=base_env(**env), capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def fake_gunicorn(tmp_path: Path) -> Path:
    """A directory holding a stand-in `gunicorn` package with its sync and gthread worker
    classes (only their dotted names matter), for config files that import them."""
    workers = tmp_path / "gunicorn" / "workers"
    workers.mkdir(parents=True)
    (tmp_path / "gunicorn" / "__init__.py").write_text("")
    (workers / "__init__.py").write_text("")
    (workers / "sync.py").write_text("class SyncWorker:\n    pass\n")
    (workers / "gthread.py").write_text("class ThreadWorker:\n    pass\n")
    return tmp_path


@pytest.mark.parametrize("imported", ["gunicorn.workers.sync import SyncWorker as worker",
                                      "gunicorn.workers.gthread import ThreadWorker as worker"])
def test_worker_class_given_as_gunicorns_own_class_loads_without_a_message(
        fake_gunicorn: Path, imported: str) -> None:
    config = fake_gunicorn / "gunicorn.conf.py"
    config.write_text(f"from {imported}\n\nworker_class = worker\n")
    result = _check_config(config)
    assert (result.returncode, result.stderr) == (0, "")


def test_worker_class_given_as_another_class_is_refused(tmp_path: Path) -> None:
    """`from uvicorn.workers import UvicornWorker; worker_class = UvicornWorker`, with a
    class of the same name standing in for uvicorn's."""
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("class UvicornWorker:\n    pass\n\n\nworker_class = UvicornWorker\n")
    result = _check_config(config)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"prefork: error: {config}: gunicorn setting worker_class = "
        f"<class '__config__.UvicornWorker'> is refused by prefork: One worker model: ")
    assert len(result.stderr.splitlines()) == 1


def test_logger_class_given_as_a_class_is_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("class JsonLogger:\n    pass\n\n\nlogger_class = JsonLogger\n")
    result = _check_config(config)
    assert result.returncode == 0
    assert f"{config}: gunicorn setting 'logger_class' is not supported by prefork; ignored " \
           f"({GUNICORN['logger_class'].instead})" in result.stderr


# -- gunicorn's flags that prefork lacks, on the command line ------------------------------------

GUNICORN_ONLY_FLAGS = [entry for entry in GUNICORN.values() if entry.flags and unsupported(entry.name)]


def _flag_args(entry: Any, flag: str, value: Any = "a-value") -> list[str]:
    """The flag as a gunicorn user types it: a store_true flag alone, any other with a value."""
    return [flag] if entry.flag_value is not None else [flag, str(value)]


@pytest.mark.parametrize("entry", GUNICORN_ONLY_FLAGS, ids=[e.name for e in GUNICORN_ONLY_FLAGS])
def test_gunicorn_only_flag_does_what_its_row_says(entry: Any, caplog) -> None:
    """Each flag of a gunicorn setting prefork lacks is judged like the config-file name:
    refused (one line), else one warning and ignored, nothing for a harmless value; its value,
    if gunicorn's flag takes one, never becomes APP."""
    caplog.set_level("WARNING", logger="prefork.error")
    for flag in entry.flags:
        caplog.clear()
        args = [*_flag_args(entry, flag), "basic:app"]
        typed = " ".join(args[:-1])
        if entry.means is not None:  # --no-control-socket: what prefork calls it, silently
            cfg = load_config(args, environ={})
            assert (getattr(cfg, entry.means[0]), cfg.app) == (entry.means[1], "basic:app")
            assert caplog.records == []
        elif entry.is_harmless(entry.flag_value if entry.flag_value is not None else "a-value"):
            assert load_config(args, environ={}).app == "basic:app"
            assert caplog.records == []
        elif entry.refused:
            with pytest.raises(ConfigError) as caught:
                load_config(args, environ={})
            assert str(caught.value) == (f"gunicorn option {typed} is refused by prefork: "
                                         f"{entry.instead}")
        else:
            assert load_config(args, environ={}).app == "basic:app"
            assert [r.getMessage() for r in caplog.records] == [
                f"gunicorn option {flag} is not supported by prefork; ignored ({entry.instead})"]
    for value in entry.harmless:
        if entry.flag_value is None and isinstance(value, (str, int)) and not isinstance(value, bool):
            caplog.clear()
            load_config([*_flag_args(entry, entry.flags[-1], value), "basic:app"], environ={})
            assert caplog.records == [], value


@pytest.mark.parametrize("args", [["-k", "sync"], ["-k", "gthread", "--threads", "4"],
                                  ["--worker-class", "SYNC"], ["--initgroups", "-R"],
                                  ["--worker-class=gthread"]])
def test_gunicorn_command_line_that_describes_prefork_checks_clean(args: list[str]) -> None:
    """The real command: exit 0 and not a word on stderr."""
    result = subprocess.run(prefork_command("--check-config", *args, "basic:app"), cwd=APPS,
                            env=base_env(), capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(("args", "env", "first_words"), [
    (["--worker-class", "gevent"], {}, "gunicorn option --worker-class gevent is refused"),
    (["-k", "uvicorn.workers.UvicornWorker"], {},
     "gunicorn option -k uvicorn.workers.UvicornWorker is refused"),
    (["--paste", "production.ini"], {}, "gunicorn option --paste production.ini is refused"),
    (["-D"], {}, "gunicorn option -D is refused"),
    ([], {"GUNICORN_CMD_ARGS": "-k gevent"},
     "GUNICORN_CMD_ARGS: gunicorn option -k gevent is refused"),
])
def test_refused_gunicorn_flag_fails_check_config_with_one_line(args: list[str], env: dict,
                                                               first_words: str) -> None:
    result = subprocess.run(prefork_command("--check-config", *args, "basic:app"), cwd=APPS,
                            env=base_env(**env), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if "Reading $GUNICORN" not in line]
    assert line.startswith(f"prefork: error: {first_words} by prefork: ")


def test_gunicorn_command_line_serves_with_one_warning_per_ignored_flag(start_server) -> None:
    server = start_server("basic:app", "-k", "sync", "--no-sendfile", "--reuse-port",
                          "--ssl-version", "TLSv1_2", "--proxy-protocol", "off", workers=1)
    assert server.get("/").text == "Hello, world!\n"
    warnings = [line for line in server.log_path.read_text().splitlines() if "gunicorn option" in line]
    assert [line.split("gunicorn option ", 1)[1].split(" ", 1)[0] for line in warnings] == [
        "--no-sendfile", "--reuse-port", "--ssl-version"]


@pytest.mark.parametrize(("args", "env", "script_name"), [
    ([], {"SCRIPT_NAME": "/api"}, "/api"),                          # shell, systemd Environment=
    (["-e", "SCRIPT_NAME=/shop/"], {"SCRIPT_NAME": "/api"}, "/shop"),  # -e wins, as in gunicorn
    (["--root-path", "/v2"], {"SCRIPT_NAME": "/api"}, "/v2"),       # an explicit --root-path wins
])
def test_script_name_from_the_environment_mounts_the_app(start_server, args: list[str],
                                                         env: dict[str, str], script_name: str) -> None:
    """gunicorn reads SCRIPT_NAME from its environment for every request; prefork makes it the
    default of --root-path: SCRIPT_NAME set, and stripped from PATH_INFO."""
    server = start_server("wsgi_cases:app", *args, workers=1, env=env, probe="")
    environ = server.get(f"{script_name}/orders?x=1").json()
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == (script_name, "/orders")


def test_bad_script_name_is_a_one_line_error() -> None:
    result = subprocess.run(prefork_command("--check-config", "-e", "SCRIPT_NAME=api", "basic:app"),
                            cwd=APPS, env=base_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "prefork: error: SCRIPT_NAME: must be empty or a path starting with '/', got 'api'"]


def test_bad_inherited_script_name_is_one_warning() -> None:
    """SCRIPT_NAME inherited from the shell or the unit must not stop every start."""
    result = subprocess.run(prefork_command("--check-config", "basic:app"), cwd=APPS,
                            env=base_env(SCRIPT_NAME="api"), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "SCRIPT_NAME" in line]
    assert line.endswith("SCRIPT_NAME in the environment is ignored: must be empty or a path "
                         "starting with '/', got 'api'")


#: `gunicorn --print-config app:app` (gunicorn 27.0.1, as root, in /tmp/gdef): every gunicorn
#: setting at its default, as a gunicorn user's generated config would spell it.
GUNICORN_DEFAULTS = APPS / "gunicorn_print_config.txt"
#: Lines that say how that gunicorn ran rather than what it defaults to, as they read here
#: (None: left out; `config` cannot be set in a file, in either server).
OF_THAT_RUN: dict[str, Any] = {"config": None, "print_config": False, "chdir": str(APPS),
                               "user": os.geteuid(), "group": os.getegid(),
                               "default_proc_name": "gunicorn"}
#: gunicorn defaults prefork cannot honour: one warning each.
NOT_HONOURED = {"initgroups"}
#: gunicorn defaults prefork honours with a wider reach, and warns about: umask 0 (gunicorn
#: applies it to its unix sockets only; here it would make every file world-writable).
WARNED = ("--umask 0o0 lets any user write",)


def _gunicorn_default_file() -> str:
    """GUNICORN_DEFAULTS as a Python config file. gunicorn prints str() of each value: a
    Python literal where there is one, else the string itself. Its no-op hooks print as
    `<Class.hook()>`; a config file that spells out a hook defines it, so they are left out."""
    lines = []
    for line in GUNICORN_DEFAULTS.read_text().splitlines():
        name, _, text = (part.strip() for part in line.partition("="))
        if text.startswith("<") and text.endswith("()>"):
            continue
        try:
            value = OF_THAT_RUN[name] if name in OF_THAT_RUN else ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if name not in OF_THAT_RUN or value is not None:
            lines.append(f"{name} = {value!r}")
    return "\n".join(lines) + "\n"


def test_gunicorns_full_default_set_checks_without_messages(tmp_path: Path) -> None:
    """A config file with every gunicorn setting at its default (e.g. `gunicorn --print-config`
    output made into a file) asks for nothing prefork does not do: exit 0, and a warning only
    for a default prefork cannot honour."""
    (tmp_path / "gunicorn_defaults.py").write_text(_gunicorn_default_file())
    result = subprocess.run(prefork_command("--check-config", "-c", "gunicorn_defaults.py",
                                            "basic:app"),
                            cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    warned = {line.split("gunicorn setting '", 1)[1].split("'", 1)[0]
              for line in result.stderr.splitlines() if "gunicorn setting '" in line}
    assert warned == NOT_HONOURED, result.stderr
    assert all(text in result.stderr for text in WARNED), result.stderr
    assert len(result.stderr.splitlines()) == len(NOT_HONOURED) + len(WARNED), result.stderr


@pytest.mark.parametrize("args", [["-k", "egg:gunicorn#sync"], ["-k", "egg:gunicorn#gthread"],
                                  ["--logger-class", "gunicorn.glogging.Logger"]])
def test_gunicorn_spellings_of_prefork_behaviour_are_silent(args: list[str]) -> None:
    result = subprocess.run(prefork_command("--check-config", *args, "basic:app"), cwd=APPS,
                            env=base_env(), capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
