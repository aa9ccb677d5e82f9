"""The app's own metrics with prometheus_client's multiprocess mode: the ``child_exit`` hook
with ``mark_process_dead`` (docs/logging-and-metrics.md) keeps a live gauge true when a worker
is killed with -9, and the dead worker's counters still count in the merged exposition."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from conftest import APPS, START_TIMEOUT, wait_for


def _app_metrics(server) -> dict[str, float]:
    """app_* samples from the app's own merged /metrics."""
    text = server.get("/metrics").text
    return {match[1]: float(match[2]) for match in re.finditer(r"^(app_\w+)(?:\{[^}]*\})? (\S+)$", text, re.M)}


def test_child_exit_marks_a_killed_worker_dead_for_prometheus_client(start_server, tmp_path: Path):
    multiproc_dir = tmp_path / "prometheus"
    multiproc_dir.mkdir()
    server = start_server("prom_app:app", "-c", str(APPS / "prom_conf.py"), workers=2,
                          env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)})
    before = _app_metrics(server)["app_served_total"]  # the start-up probe's
    served = {int(server.get("/").text) for _ in range(20)}
    metrics = _app_metrics(server)
    assert metrics["app_live_workers"] == 2
    assert metrics["app_served_total"] == before + 20

    victim = next(iter(served))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2,
             START_TIMEOUT, message="the killed worker replaced")
    # Its live gauge file is gone (without the hook the gauge would say 3), its counter stays.
    metrics = wait_for(lambda: (m := _app_metrics(server))["app_live_workers"] == 2 and m,
                       START_TIMEOUT, message="the live gauge back at 2")
    assert metrics["app_served_total"] == before + 20  # type: ignore[index]
    assert not list(multiproc_dir.glob(f"gauge_livesum_{victim}.db"))
