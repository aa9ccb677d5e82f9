"""A gunicorn config file of the kind real projects keep next to their code, using only
settings prefork has. tests/integration/test_gunicorn_compat.py runs ``prefork -c gunicorn.conf.py``
with a copy of it, unchanged. Paths come from the environment, as in a twelve-factor app."""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
backlog = 512
workers = min(3, multiprocessing.cpu_count() * 2 + 1)
worker_class = "sync"  # what prefork does: accepted without a warning
threads = 1
timeout = 30
graceful_timeout = 10
keepalive = 5
max_requests = 1000
max_requests_jitter = 50
limit_request_line = 8190
limit_request_fields = 50
limit_request_field_size = 8190
forwarded_allow_ips = "127.0.0.1,::1"
proxy_allow_ips = "127.0.0.1"
preload_app = False
reload = False
umask = 0o022
user = None
group = None
proc_name = "gunicorn-compat"
pidfile = os.environ.get("GUNICORN_PIDFILE")
loglevel = "info"
errorlog = "-"
accesslog = os.environ.get("GUNICORN_ACCESS_LOG")
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'

HOOK_LOG = os.environ.get("GUNICORN_HOOK_LOG", os.devnull)


def _record(*words: object) -> None:
    with open(HOOK_LOG, "a") as file:
        file.write(" ".join(str(word) for word in words) + "\n")


def on_starting(server):
    _record("on_starting", server.pid)


def when_ready(server):
    _record("when_ready", server.pid)


def pre_fork(server, worker):
    _record("pre_fork")


def post_fork(server, worker):
    _record("post_fork", worker.pid)


def post_worker_init(worker):
    _record("post_worker_init", os.getpid())


def pre_request(worker, req):
    _record("pre_request", req.method, req.path)


def post_request(worker, req, environ, resp):
    _record("post_request", req.path, environ["PATH_INFO"])


def worker_exit(server, worker):
    _record("worker_exit", worker.pid)


def on_exit(server):
    _record("on_exit", server.pid)


def child_exit(server, worker):
    _record("child_exit", worker.pid, worker.age)


def nworkers_changed(server, new_value, old_value):
    _record("nworkers_changed", new_value, old_value)


def worker_int(worker):
    _record("worker_int", worker.pid)


def worker_abort(worker):
    _record("worker_abort", worker.pid)


def pre_exec(server):
    _record("pre_exec", server.pid, os.getpid())
