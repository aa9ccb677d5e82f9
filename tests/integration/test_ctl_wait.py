"""`prefork ctl` as a deploy script uses it: it returns when the outcome is known and says
what it was. Real servers, real reloads; the assertions right after the command returns need
no waiting, since the command itself waited."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import APPS, prefork_command, wait_for

CLI_TIMEOUT = 60
GOOD_APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""


def ctl(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(prefork_command("ctl", *args, "--control-socket", str(path)), cwd=APPS,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)


def status(path: Path) -> dict:
    result = subprocess.run(prefork_command("status", "--json", "--control-socket", str(path)),
                            capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def serve_deployable(start_server, tmp_path: Path, workers: int = 2):
    """A server on an app in tmp_path that the test can break, with a known control socket."""
    (tmp_path / "deployable.py").write_text(GOOD_APP)
    path = tmp_path / "ctl.sock"
    server = start_server("deployable:app", "--chdir", str(tmp_path), "--control-socket", str(path),
                          workers=workers)
    wait_for(path.exists, 10, message="control socket")
    return server, path


def test_reload_returns_when_the_new_generation_serves(start_server, tmp_path):
    server, path = serve_deployable(start_server, tmp_path)
    before = server.worker_pids()
    result = ctl(path, "reload")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Reload complete: generation 2 serving"
    now = status(path)
    assert now["generation"] == 2 and now["reloading"] is None
    assert {w["generation"] for w in now["workers"] if w["state"] != "retiring"} == {2}
    assert not {w["pid"] for w in now["workers"] if w["generation"] == 2} & before


def test_reload_of_a_broken_deploy_exits_1_with_the_reason(start_server, tmp_path):
    server, path = serve_deployable(start_server, tmp_path)
    (tmp_path / "deployable.py").write_text("def app(:\n")  # a deploy with a syntax error
    result = ctl(path, "reload")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("prefork: error: Reload abandoned: a new worker failed to boot")
    assert line.endswith("; generation 1 keeps serving")
    assert server.get("/").text == "ok"


def test_reload_with_a_bad_setting_exits_1_with_the_setting(start_server, tmp_path):
    config = tmp_path / "prefork.conf.py"
    config.write_text("timeout = 30\n")
    (tmp_path / "deployable.py").write_text(GOOD_APP)
    path = tmp_path / "ctl.sock"
    server = start_server("deployable:app", "-c", str(config), "--chdir", str(tmp_path),
                          "--control-socket", str(path), workers=1)
    wait_for(path.exists, 10, message="control socket")
    config.write_text("timeout = 'soon'\n")
    result = ctl(path, "reload")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"prefork: error: Reload abandoned: {config}: timeout: must be a number of seconds >= 0, "
        "got 'soon'; generation 1 keeps serving"]
    assert server.get("/").text == "ok"


def test_no_wait_returns_once_the_request_is_queued(start_server, tmp_path):
    server, path = serve_deployable(start_server, tmp_path, workers=1)
    result = ctl(path, "reload", "--no-wait")
    assert (result.returncode, result.stdout) == (0, "reload requested (HUP queued)\n")
    wait_for(lambda: status(path)["generation"] == 2, 20, message="generation 2")


def test_workers_returns_when_the_count_serves(start_server, tmp_path):
    server, path = serve_deployable(start_server, tmp_path, workers=1)
    result = ctl(path, "workers", "+2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "3 worker(s) serving"
    assert [w["state"] in ("ready", "busy") for w in status(path)["workers"]] == [True] * 3
    result = ctl(path, "workers", "-5")  # never fewer than one
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "1 worker(s) serving"
    assert len(status(path)["workers"]) == 1


def test_wait_is_bounded_by_timeout(start_server, tmp_path):
    """A generation that boots slower than --timeout: exit 1 saying it may still be in progress."""
    server, path = serve_deployable(start_server, tmp_path, workers=1)
    (tmp_path / "deployable.py").write_text("import time\ntime.sleep(5)\n" + GOOD_APP)
    result = ctl(path, "reload", "--timeout", "0.5")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "prefork: error: reload: no outcome within 0.5s (it may still be in progress: see "
        "`prefork status`)"]
