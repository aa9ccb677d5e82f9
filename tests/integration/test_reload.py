"""Zero-downtime reload, as an operator sees it: HUP (new code, config, logging, binds), --reload
on edited code and on --reload-extra-file. Upgrades (USR2) are in test_upgrade.py; scaling,
recycling and recovery in test_lifecycle.py.

Every test drives real signals into a real prefork while real clients keep it busy, and
asserts what the clients saw (no failed request) before what the log says.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import requests

from conftest import APPS, free_port, wait_for
from loadgen import Load


def copy_app(tmp_path: Path, version: str = "v1") -> Path:
    """The lifecycle app in a directory of its own, so the test can edit its code."""
    app_dir = tmp_path / "app"
    app_dir.mkdir(exist_ok=True)
    target = app_dir / "lifecycle.py"
    shutil.copy(APPS / "lifecycle.py", target)
    set_version(target, version)
    return app_dir


def set_version(path: Path, version: str) -> None:
    text = path.read_text()
    previous = path.stat().st_mtime
    start = text.index('VERSION = "')
    end = text.index('"', start + len('VERSION = "'))
    path.write_text(text[:start] + f'VERSION = "{version}' + text[end:])
    bump_mtime(path, previous)


def bump_mtime(path: Path, previous: float = 0.0) -> None:
    """Make sure an edit is visible to mtime-based checks even within one second, and after an
    earlier bump: the .pyc next to it records the source's mtime in whole seconds with its size,
    and "v1" -> "v2" keeps the size (without PYTHONDONTWRITEBYTECODE the stale .pyc was used)."""
    stat = path.stat()
    os.utime(path, (stat.st_atime, max(stat.st_mtime, previous) + 2))


def reload_broken_code(server, app_dir: Path) -> Path:
    """Break the app's code on disk and HUP: the reload is abandoned (the old code serves on).
    Returns the broken source, for the test to mend."""
    source = app_dir / "lifecycle.py"
    source.write_text(source.read_text() + "\ndef broken(:\n")
    bump_mtime(source)
    server.signal(signal.SIGHUP)
    server.wait_log("Reload abandoned", timeout=20)
    return source


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            inodes.add(target)
    return inodes


def generation_complete(server, generation: int) -> None:
    server.wait_log(f"Reload complete: generation {generation} serving", timeout=20)


def test_ten_hups_under_load_fail_no_request(start_server):
    server = start_server("lifecycle:app", workers=2)
    listener_inode = f"socket:[{os.fstat(server.listener.fileno()).st_ino}]"
    first_pids = server.worker_pids()
    with Load(server.url, keepalive_clients=3, close_clients=2) as load:
        load.wait_successes(50)
        for generation in range(2, 12):
            server.signal(signal.SIGHUP)
            generation_complete(server, generation)
            load.wait_successes(load.result.succeeded + 30)  # every reload happens under load
    result = load.result
    assert result.failed == 0, result.summary()
    final = server.wait_workers(2, timeout=20)
    assert not final & first_pids
    assert listener_inode in socket_inodes(server.pid)
    for pid in final:
        assert listener_inode in socket_inodes(pid)


def test_rapid_hups_supersede_each_other_without_failures(start_server):
    server = start_server("lifecycle:app", workers=2)
    with Load(server.url, keepalive_clients=2, close_clients=2) as load:
        load.wait_successes(20)
        for _ in range(5):
            server.signal(signal.SIGHUP)
            time.sleep(0.05)
        server.wait_log("Reload complete", timeout=20)
        load.wait_successes(load.result.succeeded + 50)
    assert load.result.failed == 0, load.result.summary()
    server.wait_workers(2, timeout=20)


def test_a_hup_during_a_reload_supersedes_it_as_routine(start_server, tmp_path):
    hold = tmp_path / "hold"
    server = start_server("lifecycle:app", workers=1, env={"BOOT_HOLD": str(hold)})
    hold.touch()  # generation 2 waits in its import
    server.signal(signal.SIGHUP)
    wait_for(lambda: server.log().count("Booting worker") == 2, 10, message="generation 2 booting")
    server.signal(signal.SIGHUP)
    server.wait_log("Reload abandoned: superseded by a newer HUP")
    hold.unlink()
    generation_complete(server, 3)
    # not an error an operator must look into
    assert "[INFO] Reload abandoned: superseded by a newer HUP; generation 1 keeps serving" in server.log()
    assert "[ERROR]" not in server.log()


def test_hup_with_broken_code_keeps_old_generation_then_loads_fixed_code(start_server, tmp_path):
    app_dir = copy_app(tmp_path)
    server = start_server("lifecycle:app", workers=2, cwd=app_dir)
    old_pids = server.worker_pids()
    source = reload_broken_code(server, app_dir)
    for _ in range(10):
        assert server.get("/").text.startswith("v1 ")
    assert server.wait_workers(2) == old_pids
    assert "lifecycle.py" in server.log() and "SyntaxError" in server.log()

    source.write_text(source.read_text().replace("\ndef broken(:\n", "\n"))
    set_version(source, "v2")
    server.signal(signal.SIGHUP)
    wait_for(lambda: server.get("/").text.startswith("v2 "), 20, message="new code served")
    wait_for(lambda: not (server.worker_pids() & old_pids), 20, message="old generation gone")


def test_hup_with_failing_import_keeps_serving(start_server, tmp_path):
    marker = tmp_path / "cannot-boot"
    server = start_server("lifecycle:app", workers=2, env={"BOOT_MARKER": str(marker)})
    with Load(server.url, keepalive_clients=2, close_clients=1) as load:
        load.wait_successes(20)
        marker.touch()
        server.signal(signal.SIGHUP)
        server.wait_log("Reload abandoned", timeout=20)
        load.wait_successes(load.result.succeeded + 20)
    assert load.result.failed == 0, load.result.summary()
    assert "this build cannot boot" in server.log()
    marker.unlink()
    server.signal(signal.SIGHUP)  # the next HUP is accepted and works
    generation_complete(server, 3)


def test_preload_hup_reimports_the_app(start_server, tmp_path):
    app_dir = copy_app(tmp_path)
    server = start_server("lifecycle:app", "--preload", workers=2, cwd=app_dir)
    assert server.get("/").text.startswith("v1 ")
    set_version(app_dir / "lifecycle.py", "v2")
    server.signal(signal.SIGHUP)
    wait_for(lambda: server.get("/").text.startswith("v2 "), 20, message="re-imported code")
    # A v2 answer can come before generation 2 is whole; a HUP then would supersede (abandon) it.
    generation_complete(server, 2)
    reload_broken_code(server, app_dir)
    assert server.get("/").text.startswith("v2 ")


def test_hup_with_a_broken_config_file_keeps_the_old_generation(start_server, tmp_path):
    conf = tmp_path / "prefork.toml"
    conf.write_text("workers = 2\n")
    server = start_server("basic:app", "-c", str(conf), workers=2)
    before = server.worker_pids()
    conf.write_text("workers = [\n")
    server.signal(signal.SIGHUP)
    server.wait_log("Reload abandoned:", timeout=20)
    assert str(conf) in server.log().split("Reload abandoned:", 1)[1].splitlines()[0]
    assert server.get("/").status_code == 200
    assert server.worker_pids() == before
    conf.write_text("workers = 2\n")  # fixed: the next HUP goes through
    server.signal(signal.SIGHUP)
    generation_complete(server, 2)


def test_hup_applies_new_logging_settings(start_server, tmp_path):
    conf = tmp_path / "logging.toml"
    conf.write_text('loglevel = "info"\n')
    server = start_server("basic:app", "-c", str(conf), workers=1)
    errorlog = tmp_path / "error.log"
    conf.write_text(f'loglevel = "info"\nerrorlog = "{errorlog}"\n')
    server.signal(signal.SIGHUP)
    wait_for(lambda: errorlog.exists() and "Reload complete: generation 2" in errorlog.read_text(), 20,
             message="the error log moved to the new file")
    assert server.get("/").status_code == 200


def test_reload_mode_serves_edited_code(start_server, tmp_path):
    app_dir = copy_app(tmp_path)
    server = start_server("lifecycle:app", "--reload", workers=1, cwd=app_dir)
    assert server.get("/").text.startswith("v1 ")
    set_version(app_dir / "lifecycle.py", "v2")
    wait_for(lambda: server.get("/").text.startswith("v2 "), 20, message="edited code served")


def test_hup_opens_added_binds_and_closes_removed_ones(start_server, tmp_path):
    port_a, port_b = free_port(), free_port()
    conf = tmp_path / "binds.toml"
    conf.write_text(f'bind = ["127.0.0.1:{port_a}"]\n')
    server = start_server("basic:app", "-c", str(conf), bind=False, workers=1)
    url_a, url_b = f"http://127.0.0.1:{port_a}/", f"http://127.0.0.1:{port_b}/"
    wait_for(lambda: _get(url_a), 10, message="A serving")
    conf.write_text(f'bind = ["127.0.0.1:{port_a}", "127.0.0.1:{port_b}"]\n')
    server.signal(signal.SIGHUP)
    generation_complete(server, 2)
    assert _get(url_a) and _get(url_b)
    conf.write_text(f'bind = ["127.0.0.1:{port_b}"]\n')
    server.signal(signal.SIGHUP)
    generation_complete(server, 3)
    wait_for(lambda: not _get(url_a), 15, message="A closed once the old generation left")
    assert _get(url_b)


def _get(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.parametrize("engine_name", ["poll", "inotify"])
def test_editing_an_extra_file_reloads_the_server(start_server, tmp_path: Path,
                                                  engine_name: str) -> None:
    template = tmp_path / "page.html"
    template.write_text("<p>one</p>")
    server = start_server("basic:app", "--reload", "--reload-engine", engine_name,
                          "--reload-extra-file", str(template), workers=1)
    before = server.worker_pids()
    edits = iter(range(1, 1000))

    def edit() -> None:
        template.write_text(f"<p>{next(edits)}</p>")
        bump_mtime(template)

    wait_for(lambda: edit() or server.worker_pids() - before, 20, interval=0.5,
             message="a new worker after the edit")
    server.wait_log("Reload complete")
    assert server.get("/").status_code == 200


@pytest.mark.parametrize("threads", ["1", "4"])
def test_recycling_after_an_abandoned_reload_never_loses_a_worker(start_server, tmp_path, threads):
    """The reload of broken code is abandoned and the old generation keeps serving, as
    promised, also when its workers reach --max-requests: their replacements would import the
    broken code, so the old workers serve on (the limit overruns) until a reload succeeds."""
    app_dir = copy_app(tmp_path)
    server = start_server("lifecycle:app", "--max-requests", "20", "--threads", threads, workers=2, cwd=app_dir)
    old_pids = server.worker_pids()
    source = reload_broken_code(server, app_dir)
    with Load(server.url, keepalive_clients=2, close_clients=2) as load:
        load.wait_successes(5 * 20 * 2, timeout=30)  # five times what both workers may serve
        server.wait_log("due for recycling serve on until a replacement boots")
        assert server.worker_pids() >= old_pids
        server.signal(signal.SIGTTOU)  # one fewer: a recycled worker goes, never the last one
        wait_for(lambda: len(server.worker_pids() & old_pids) == 1, 10, message="one old worker retired")
        load.wait_successes(load.result.succeeded + 40)
        source.write_text(source.read_text().replace("\ndef broken(:\n", "\n"))
        set_version(source, "v2")
        server.signal(signal.SIGHUP)
        generation_complete(server, 3)
        load.wait_successes(load.result.succeeded + 40)
    assert load.result.failed == 0, load.result.summary()
    assert server.get("/").text.startswith("v2 ")
    wait_for(lambda: not (server.worker_pids() & old_pids), 20, message="the old generation gone")
