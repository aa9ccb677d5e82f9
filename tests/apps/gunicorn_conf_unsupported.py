"""A gunicorn config file that also sets gunicorn settings prefork does not have, but only ones
that tune what prefork does its own way (worker_connections, sendfile, statsd, ...) or that ask
for what prefork does anyway (worker_class = "gthread", daemon = False): it must load and serve,
with one warning per tuning name (tests/test_gunicorn_compat.py). UNSUPPORTED lists them."""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = 2
worker_class = "gthread"
worker_connections = 1000
daemon = False
raw_env = ["DJANGO_SETTINGS_MODULE=site.settings"]
reuse_port = True
sendfile = False
statsd_host = "localhost:8125"
http_protocols = "h1"  # gunicorn 25


def worker_int(worker):
    pass


def pre_exec(server):
    pass


UNSUPPORTED = ("worker_connections", "reuse_port", "sendfile", "statsd_host", "worker_int",
               "pre_exec")
