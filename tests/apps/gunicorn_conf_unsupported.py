"""A gunicorn config file that also sets gunicorn settings prefork does not have (worker
classes, daemon mode, ...): it must still load and serve, with one warning per such
name (tests/test_gunicorn_compat.py). UNSUPPORTED lists them for the test."""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = 2
worker_class = "gevent"
worker_connections = 1000
daemon = False
raw_env = ["DJANGO_SETTINGS_MODULE=site.settings"]
reuse_port = True
sendfile = False
worker_tmp_dir = "/dev/shm"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
http_protocols = "h1"  # gunicorn 25


def on_dirty_starting(arbiter):  # gunicorn 25's dirty arbiter
    pass


def dirty_post_fork(arbiter, worker):
    pass


UNSUPPORTED = ("worker_class", "daemon", "raw_env", "reuse_port",
               "sendfile", "secure_scheme_headers", "http_protocols",
               "on_dirty_starting", "dirty_post_fork")
