"""The app the metrics and control tests run: answers with chosen statuses, and can crash,
hang, or refuse to boot on cue."""

import os
import time

if os.environ.get("BOOT_MARKER") and os.path.exists(os.environ["BOOT_MARKER"]):
    raise RuntimeError("this build cannot boot (BOOT_MARKER exists)")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/exit":  # a worker dying on its own, mid-request
        os._exit(1)
    if path == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or 1))
    if path == "/read":  # the whole body (with --no-request-buffering: from the socket)
        environ["wsgi.input"].read()
    if path == "/error":
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"failed\n"]
    if path == "/pid":
        body = str(os.getpid()).encode()
    elif path in ("/", "/sleep", "/read"):
        body = b"ok\n"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
