"""An app instrumented with prometheus_client in multiprocess mode, as Django and Flask shops
do under gunicorn: each worker writes its own files in $PROMETHEUS_MULTIPROC_DIR and /metrics
merges them. ``app_live_workers`` is a live gauge: each worker adds 1 while it lives."""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess

SERVED = Counter("app_served", "Requests the app answered, in every worker that ever ran")
LIVE = Gauge("app_live_workers", "Workers alive now", multiprocess_mode="livesum")
LIVE.inc()  # imported in each worker after the fork (no --preload): this worker's own file


def app(environ, start_response):
    if environ["PATH_INFO"] == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        SERVED.inc()
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
