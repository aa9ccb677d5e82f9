"""Hooks as gunicorn's own examples/example_config.py writes them: logging through
``server.log`` and ``worker.log`` (gunicorn's Arbiter and Worker both carry its logger)."""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = 1


def when_ready(server):
    server.log.info("Server is ready. Spawning workers")


def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)


def post_worker_init(worker):
    worker.log.info("Worker initialised (pid: %s)", worker.pid)
