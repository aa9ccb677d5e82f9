"""Issue 16's bar: a gunicorn shop's config file runs unchanged under ``prefork -c``.

One gunicorn.conf.py with what such shops wire up — ``raw_env``, ``statsd_host`` and
``statsd_prefix``, a ``logconfig_dict`` putting a JSON formatter on gunicorn's loggers, and a
``child_exit`` hook — against a real server: the app sees the variable, gunicorn-named
datagrams reach a UDP listener, every access line reaches the log file, and a worker killed
with -9 is reported to ``child_exit`` with its pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

from conftest import wait_for

SHOP_CONF = '''
import json
import logging

raw_env = ["SHOP_SETTING=from-raw-env"]
statsd_host = %(statsd)r
statsd_prefix = "shop"


class JsonFormatter(logging.Formatter):
    def format(self, record):
        return json.dumps({"logger": record.name, "message": record.getMessage()})


logconfig_dict = {
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {"file": {"class": "logging.FileHandler", "filename": %(log)r, "formatter": "json"}},
    "root": {"level": "WARNING", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["file"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["file"], "propagate": False},
    },
}


def child_exit(server, worker):
    with open(%(exits)r, "a") as exits:
        exits.write(f"{worker.pid}\\n")
'''


def test_a_gunicorn_shops_config_runs_unchanged(start_server, tmp_path: Path) -> None:
    statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    statsd.bind(("127.0.0.1", 0))
    statsd.settimeout(0.2)
    log_file, exits = tmp_path / "shop.json.log", tmp_path / "exits.log"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(SHOP_CONF % {"statsd": f"127.0.0.1:{statsd.getsockname()[1]}",
                                 "log": str(log_file), "exits": str(exits)})
    server = start_server("osenv:app", "-c", str(conf), workers=2)

    # raw_env: the app sees the variable
    assert server.get("/?SHOP_SETTING").text.startswith("from-raw-env ")
    for _ in range(4):
        assert server.get("/?HOME").status_code == 200

    # statsd: gunicorn's names under the prefix
    lines: list[str] = []

    def statsd_lines() -> list[str]:
        try:
            lines.extend(statsd.recv(65536).decode().split("\n"))
        except TimeoutError:
            pass
        return lines

    wanted = ("shop.gunicorn.requests:", "shop.gunicorn.request.duration:",
              "shop.gunicorn.request.status.200:", "shop.gunicorn.workers:2|g")
    wait_for(lambda: all(any(line.startswith(w) for line in statsd_lines()) for w in wanted), 15,
             message=f"statsd lines {wanted}")

    def requests_counted() -> int:
        return sum(int(line.split(":")[1].split("|")[0]) for line in statsd_lines()
                   if line.startswith("shop.gunicorn.requests:"))
    wait_for(lambda: requests_counted() >= 5, 10, message="the five requests counted")

    # logconfig_dict: every access line reaches the file, through gunicorn's logger names
    def access_messages() -> list[str]:
        if not log_file.exists():
            return []
        records = [json.loads(line) for line in log_file.read_text().splitlines()]
        return [r["message"] for r in records if r["logger"] in ("prefork.access", "gunicorn.access")]

    wait_for(lambda: sum('"GET /?HOME HTTP/1.1" 200' in m for m in access_messages()) == 4, 10,
             message="the four access lines in the JSON file")
    assert any('"GET /?SHOP_SETTING HTTP/1.1" 200' in m for m in access_messages())

    # child_exit: a worker killed with -9 is reported with its pid
    victim = min(server.worker_pids())
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: exits.exists() and str(victim) in exits.read_text().split(), 10,
             message="child_exit called with the killed worker")
    server.wait_workers(2)
    statsd.close()
