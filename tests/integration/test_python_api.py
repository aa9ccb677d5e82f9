"""The Python API, ``from prefork.server import serve``: a script serving its own app object
with real workers, an import string, and the same validation as the command line.

The serving tests run tests/apps/serve_api_app.py (or a one-line script) as a subprocess on a
socket bound here and handed over in PREFORK_FD, with ``bind=`` naming the same address, so
the arbiter adopts it instead of binding again.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from conftest import APPS, START_TIMEOUT, base_env, prefork_command, wait_for
from prefork.config.appload import AppLoadError
from prefork.config.cli import load_config
from prefork.config.settings import ConfigError
from prefork.server import serve

STOP_TIMEOUT = 15.0


def _hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\n"]


def _run_script(args: list[str], listener: socket.socket, log_path: Path) -> subprocess.Popen:
    host, port = listener.getsockname()
    env = base_env(PREFORK_FD=str(listener.fileno()), SERVE_API_BIND=f"{host}:{port}")
    with open(log_path, "wb") as log_file:
        return subprocess.Popen([sys.executable, *args], cwd=APPS, env=env,
                                pass_fds=(listener.fileno(),), stdout=log_file,
                                stderr=subprocess.STDOUT)


def _get(port: int) -> str | None:
    try:
        # Connection: close, or TERM would wait out the idle keep-alive connection.
        return requests.get(f"http://127.0.0.1:{port}/", timeout=2,
                            headers={"Connection": "close"}).text
    except requests.RequestException:
        return None


def _title(process: psutil.Process) -> str:
    return " ".join(process.cmdline()).strip()


def _titled_workers(proc: subprocess.Popen, count: int) -> list[psutil.Process] | None:
    """The workers, once ``count`` of them carry a worker's process title (set in the child
    after it has dropped the signal handlers inherited from the arbiter)."""
    workers = [child for child in psutil.Process(proc.pid).children()
               if child.status() != psutil.STATUS_ZOMBIE and _title(child).startswith("prefork: worker")]
    return workers if len(workers) == count else None


def _stop(proc: subprocess.Popen) -> int:
    """TERM (graceful stop); the script's exit status is what serve() returned."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_script_serves_its_app_object_with_forked_workers(listener: socket.socket,
                                                          tmp_path: Path) -> None:
    proc = _run_script(["serve_api_app.py"], listener, tmp_path / "api.log")
    try:
        port = listener.getsockname()[1]
        first = wait_for(lambda: _get(port), START_TIMEOUT, message="the API server to answer")
        # Both titled as workers: past the fork's signal-handler reset, so TERM reaches them.
        workers = wait_for(lambda: _titled_workers(proc, 2), START_TIMEOUT, message="2 workers")
        worker_pids = {w.pid for w in workers}
        answers = {_get(port) for _ in range(20)} | {first}
        for answer in answers:
            # The closure reached the workers, and the hook given as a function ran in each.
            match = re.fullmatch(r"Hello from the API from worker (\d+) \(initialised: True\)\n",
                                 answer or "")
            assert match is not None, answer
            assert int(match.group(1)) in worker_pids
        titles = [_title(w) for w in workers]
        assert all(title.endswith("[__main__:make_app.<locals>.app]") for title in titles), titles
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in worker_pids)


def test_serve_with_an_import_string(listener: socket.socket, tmp_path: Path) -> None:
    script = ("import os, sys\nfrom prefork.server import serve\n"
              "sys.exit(serve('basic:app', bind=os.environ['SERVE_API_BIND'], workers=1))\n")
    proc = _run_script(["-c", script], listener, tmp_path / "api.log")
    try:
        port = listener.getsockname()[1]
        assert wait_for(lambda: _get(port), START_TIMEOUT,
                        message="the API server to answer") == "Hello, world!\n"
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- validation: the config table's, raised before anything is bound or forked ----------------

@pytest.mark.parametrize(("settings", "message"), [
    ({"workers": 0}, "workers: must be an integer >= 1 or auto, got 0"),
    ({"wrokers": 2}, "unknown setting 'wrokers' (did you mean 'workers'?)"),
    ({"preload": True}, "unknown setting 'preload' (did you mean 'preload_app'?)"),
    ({"timeout": "soon"}, "timeout: must be a number of seconds >= 0, got 'soon'"),
    ({"bind": 8000}, "bind: must be an address or a list of addresses, got 8000"),
    ({"bind": "localhost:http"}, "--bind"),
    ({"keyfile": "key.pem"}, "--keyfile: needs --certfile as well"),
    ({"post_fork": lambda server: None}, "post_fork: must be a function taking (server, worker)"),
    ({"wsgi_app": "basic:app"}, "wsgi_app: the application is serve()'s first argument"),
])
def test_bad_settings_raise_config_error(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        serve(_hello, **settings)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("settings, flags", [
    ({"certfile": "missing-cert.pem"}, ["--certfile", "missing-cert.pem"]),
    ({"accesslog": "/nonexistent-dir/access.log"}, ["--access-logfile", "/nonexistent-dir/access.log"]),
])
def test_serve_makes_the_command_lines_start_up_checks(settings: dict, flags: list[str],
                                                       listener: socket.socket) -> None:
    """A TLS file or access log the workers could not open is the ConfigError the command line
    prints, raised before anything is bound or forked, not a worker that fails to boot."""
    held = "%s:%d" % listener.getsockname()  # binding it would fail: EADDRINUSE
    with pytest.raises(ConfigError) as caught:
        serve(_hello, bind=held, **settings)
    cli = subprocess.run(prefork_command(*flags, "-b", held, "basic:app"), cwd=APPS, env=base_env(),
                         capture_output=True, text=True, timeout=START_TIMEOUT)
    assert (cli.returncode, cli.stderr) == (2, f"prefork: error: {caught.value}\n")


@pytest.mark.parametrize("app", [42, None, b"basic:app"])
def test_app_must_be_callable_or_import_string(app: object) -> None:
    with pytest.raises(TypeError, match="needs a WSGI callable or an import string"):
        serve(app)  # type: ignore[arg-type]


@pytest.fixture
def in_apps_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve() puts the working directory first on sys.path, as the CLI does: undo both."""
    monkeypatch.chdir(APPS)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("WEB_CONCURRENCY", "PORT", "FORWARDED_ALLOW_IPS"):
        monkeypatch.delenv(name, raising=False)


def test_check_config_loads_an_import_string_and_binds_nothing(in_apps_dir: None,
                                                               listener: socket.socket) -> None:
    held = "%s:%d" % listener.getsockname()  # binding it would fail: EADDRINUSE
    assert serve("basic:app", bind=held, check_config=True) == 0
    assert serve(_hello, check_config=True) == 0
    with pytest.raises(AppLoadError, match="broken_syntax.py"):
        serve("broken_syntax:app", check_config=True)


def test_print_config_shows_the_resolved_settings(in_apps_dir: None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert serve(_hello, workers=3, bind=["127.0.0.1:9001", "unix:/tmp/x.sock"],
                 keepalive=75, print_config=True) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "workers = 3" in lines
    assert "keepalive = 75.0" in lines
    assert "bind = ['127.0.0.1:9001', 'unix:/tmp/x.sock']" in lines


def test_bad_value_message_is_the_config_files(tmp_path: Path) -> None:
    """The same validation as a config file: same value, same complaint (modulo the label)."""
    config = tmp_path / "bad.conf.py"
    config.write_text("max_requests = -5\n")
    with pytest.raises(ConfigError) as from_file:
        load_config(["-c", str(config), "basic:app"], environ={})
    with pytest.raises(ConfigError) as from_api:
        serve(_hello, max_requests=-5)
    assert str(from_file.value).endswith("must be an integer >= 0, got -5")
    assert str(from_api.value).endswith("must be an integer >= 0, got -5")
