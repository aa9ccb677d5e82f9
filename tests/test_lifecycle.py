"""Zero-downtime lifecycle, as an operator sees it: reload, upgrade, scale, recycle, recover.

Every test drives real signals into a real prefork while real clients keep it busy, and
asserts what the clients saw (no failed request) before what the log says.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest
import requests

from conftest import APPS, free_port, stop_orphan, wait_for
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


def test_hup_with_broken_code_keeps_old_generation_then_loads_fixed_code(start_server, tmp_path):
    app_dir = copy_app(tmp_path)
    server = start_server("lifecycle:app", workers=2, cwd=app_dir)
    old_pids = server.worker_pids()
    source = app_dir / "lifecycle.py"
    source.write_text(source.read_text() + "\ndef broken(:\n")
    bump_mtime(source)
    server.signal(signal.SIGHUP)
    server.wait_log("Reload abandoned", timeout=20)
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
    source = app_dir / "lifecycle.py"
    source.write_text(source.read_text() + "\ndef broken(:\n")
    bump_mtime(source)
    server.signal(signal.SIGHUP)
    server.wait_log("Reload abandoned", timeout=20)
    assert server.get("/").text.startswith("v2 ")


def test_usr2_upgrade_under_load_hands_over_to_a_new_arbiter(start_server, tmp_path):
    pidfile = tmp_path / "prefork.pid"
    server = start_server("lifecycle:app", "--pid", str(pidfile), workers=2)
    wait_for(pidfile.exists, 10, message="pidfile")
    assert int(pidfile.read_text()) == server.pid
    new_pid = None
    try:
        with Load(server.url, keepalive_clients=3, close_clients=2) as load:
            load.wait_successes(30)
            server.signal(signal.SIGUSR2)
            assert server.wait_exit(timeout=40) == 0  # the old arbiter leaves on its own
            new_pid = int(pidfile.read_text())
            load.wait_successes(load.result.succeeded + 50)
        assert load.result.failed == 0, load.result.summary()
        assert new_pid != server.pid
        new_arbiter = psutil.Process(new_pid)
        assert "prefork: arbiter" in " ".join(new_arbiter.cmdline())
        served_by = {int(server.get("/").text.split()[1]) for _ in range(10)}
        assert served_by <= {child.pid for child in new_arbiter.children()}
    finally:
        if new_pid:
            stop_orphan(new_pid)


def test_usr2_with_a_broken_build_keeps_the_old_arbiter(start_server, tmp_path):
    marker = tmp_path / "cannot-boot"
    pidfile = tmp_path / "prefork.pid"
    server = start_server("lifecycle:app", "--pid", str(pidfile), workers=1, env={"BOOT_MARKER": str(marker)})
    marker.touch()
    server.signal(signal.SIGUSR2)
    server.wait_log("Upgrade failed", timeout=30)
    assert server.proc.poll() is None
    assert server.get("/").status_code == 200
    assert int(pidfile.read_text()) == server.pid


def test_hung_worker_is_aborted_with_its_stack_logged_and_replaced(start_server):
    server = start_server("lifecycle:app", "--timeout", "2", workers=1)
    (hung_pid,) = server.worker_pids()
    start = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        server.get("/hang", timeout=30)
    assert time.monotonic() - start > 2
    new_pids = server.wait_workers(1)
    assert hung_pid not in new_pids
    assert server.get("/").status_code == 200
    log = server.log()
    assert f"WORKER TIMEOUT (pid: {hung_pid})" in log
    assert "lifecycle.py" in log and "in app" in log  # faulthandler's frame for the sleeping app
    assert f"Worker (pid: {hung_pid}) was aborted after its heartbeat timed out" in log


def test_ttin_and_ttou_change_the_worker_count(start_server):
    server = start_server(workers=2)
    server.signal(signal.SIGTTIN)
    server.wait_workers(3)
    server.signal(signal.SIGTTIN)
    server.wait_workers(4)
    for _ in range(5):
        server.signal(signal.SIGTTOU)
        time.sleep(0.1)
    server.wait_workers(1)  # never below one
    assert server.get("/").status_code == 200


@pytest.mark.parametrize("threads", ["1", "4"])
def test_max_requests_recycles_workers_without_failures(start_server, threads):
    server = start_server("lifecycle:app", "--threads", threads, "--max-requests", "50",
                          "--max-requests-jitter", "10", workers=2)
    first = server.worker_pids()
    with Load(server.url, keepalive_clients=3, close_clients=1) as load:
        load.wait_successes(400, timeout=30)
    assert load.result.failed == 0, load.result.summary()
    assert not (server.wait_workers(2) & first)
    assert "(--max-requests)" in server.log()


def test_max_worker_memory_recycles_a_growing_worker(start_server):
    server = start_server("lifecycle:app", "--max-worker-memory", "80", workers=1)
    (first,) = server.worker_pids()
    with Load(server.url, keepalive_clients=2, close_clients=1) as load:
        load.wait_successes(10)
        for _ in range(12):  # 12 x 8 MiB pushes it past 80 MiB
            assert server.get("/grow").status_code == 200
        load.wait_successes(load.result.succeeded + 20)
    assert load.result.failed == 0, load.result.summary()
    wait_for(lambda: first not in server.worker_pids(), 10, message="recycled worker")
    assert "(--max-worker-memory)" in server.log()


def test_crash_loop_backs_off_instead_of_fork_bombing(start_server, tmp_path):
    marker = tmp_path / "crash"
    server = start_server("lifecycle:app", workers=2, env={"BOOT_MARKER": str(marker)})
    marker.touch()  # from now on, a new worker dies while importing the app
    for pid in server.worker_pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(4)
    boots = server.log().count("Booting worker")
    assert boots <= 2 + 8, f"{boots} workers spawned in 4 s"
    assert "next attempt in" in server.log()
    assert server.proc.poll() is None  # it keeps trying, it does not give up
    marker.unlink()
    wait_for(lambda: _answers(server), 30, message="recovery after the crash loop")


def _answers(server) -> bool:
    try:
        return server.get("/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_pidfile_is_written_and_removed(start_server, tmp_path):
    pidfile = tmp_path / "run" / "prefork.pid"
    pidfile.parent.mkdir()
    server = start_server("basic:app", "--pid", str(pidfile))
    assert int(pidfile.read_text()) == server.pid
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not pidfile.exists()
    assert list(pidfile.parent.iterdir()) == []  # no temporary file left behind


def test_hooks_run_in_order_and_a_failing_hook_is_only_logged(start_server, tmp_path):
    trace = tmp_path / "hooks.log"
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(f'''
TRACE = {str(trace)!r}

def _note(name):
    with open(TRACE, "a") as f:
        f.write(name + "\\n")

def on_starting(server): _note("on_starting")
def when_ready(server): _note("when_ready")
def on_reload(server): _note("on_reload")
def pre_fork(server, worker): _note("pre_fork")
def post_fork(server, worker): _note("post_fork")
def post_worker_init(worker): _note("post_worker_init")
def pre_request(worker, req): _note("pre_request " + req.path)
def post_request(worker, req, environ, resp): _note("post_request " + str(resp.status_code))
def worker_exit(server, worker): _note("worker_exit")
def on_exit(server):
    _note("on_exit")
    raise RuntimeError("hook failure on purpose")
''')
    server = start_server("basic:app", "-c", str(conf), workers=1)
    assert server.get("/pid").status_code == 200
    server.signal(signal.SIGHUP)
    generation_complete(server, 2)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    lines = trace.read_text().splitlines()
    assert lines[:3] == ["on_starting", "when_ready", "pre_fork"]  # gunicorn's order
    for expected in ("post_fork", "post_worker_init", "pre_request /pid",
                     "post_request 200", "on_reload", "worker_exit", "on_exit"):
        assert expected in lines
    assert "Exception in on_exit hook" in server.log()


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


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_workers_drop_privileges_to_user_and_group(start_server):
    # --preload: the arbiter (root) imports the app; here the interpreter itself lives under
    # /root, which "nobody" may not read, so a worker could not import modules on its own.
    server = start_server("basic:app", "-u", "nobody", "-g", "nogroup", "--preload", workers=2)
    nobody = psutil.Process(server.pid).uids().real  # the arbiter stays root
    assert nobody == 0
    for worker in server.workers():
        assert worker.uids().effective == 65534
        assert worker.gids().effective == 65534
    assert server.get("/").status_code == 200
