"""A gunicorn config file that also sets gunicorn settings prefork does not have, but only ones
that tune what prefork does its own way (reuse_port, sendfile, dirty-arbiter hooks, ...) or that ask
for what prefork does anyway (worker_class = "gthread", daemon = False), beside gunicorn
settings prefork has (worker_connections, worker_tmp_dir, raw_env): it must load and serve,
with one warning per tuning name (tests/integration/test_gunicorn_compat.py). UNSUPPORTED lists them."""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = 2
worker_class = "gthread"
worker_connections = 1000
worker_tmp_dir = "/dev/shm"
daemon = False
raw_env = ["DJANGO_SETTINGS_MODULE=site.settings"]
reuse_port = True
sendfile = False
tmp_upload_dir = "/var/tmp"
http_protocols = "h1"  # gunicorn 25


def on_dirty_starting(arbiter):  # gunicorn 25's dirty arbiter
    pass


def dirty_post_fork(arbiter, worker):
    pass


UNSUPPORTED = ("reuse_port", "sendfile", "tmp_upload_dir", "on_dirty_starting", "dirty_post_fork")
