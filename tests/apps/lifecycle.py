"""The app the lifecycle tests run and edit: it says which code version answered."""

import os
import time

VERSION = "v1"
_hoard = []


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hang":
        time.sleep(60)
    if path == "/grow":
        _hoard.append(bytearray(8 * 1024 * 1024))
    if os.environ.get("CRASH_MARKER") and os.path.exists(os.environ["CRASH_MARKER"]):
        os._exit(1)
    body = f"{VERSION} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


if os.environ.get("BOOT_MARKER") and os.path.exists(os.environ["BOOT_MARKER"]):
    raise RuntimeError("this build cannot boot (BOOT_MARKER exists)")
