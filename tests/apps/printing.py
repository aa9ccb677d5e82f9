"""An app that writes to stdout and stderr the way careless code does (print, a C library):
--capture-output must put both into the error log (tests/integration/test_gunicorn_logging.py)."""

import os
import sys


def app(environ, start_response):
    print(f"printed to stdout by {os.getpid()}", flush=True)
    sys.stderr.write(f"written to stderr by {os.getpid()}\n")
    sys.stderr.flush()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
