"""A script that serves its own application through prefork's Python API (tests/integration/test_python_api.py):

    SERVE_API_BIND=127.0.0.1:8000 python serve_api_app.py

The application is a closure built at run time, so no import string could name it: the
workers can only have it because serve() hands the object to the arbiter, which forks them.
A hook passed as a Python function marks each worker once it has initialised.
"""

import os
import sys

from prefork.server import serve

BIND_ENV = "SERVE_API_BIND"
initialised_workers: set[int] = set()


def make_app(greeting: str):
    def app(environ, start_response):
        body = (f"{greeting} from worker {os.getpid()} "
                f"(initialised: {os.getpid() in initialised_workers})\n").encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return app


def post_worker_init(worker) -> None:
    initialised_workers.add(os.getpid())


if __name__ == "__main__":
    sys.exit(serve(make_app("Hello from the API"), bind=os.environ[BIND_ENV], workers=2,
                   timeout=20, graceful_timeout=5, post_worker_init=post_worker_init))
