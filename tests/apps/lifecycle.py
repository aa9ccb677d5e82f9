"""The app the lifecycle tests run and edit: it says which code version answered."""

import os
import time

VERSION = "v1"
_hoard = []


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hang":
        time.sleep(60)
    if path == "/stubborn":  # swallows even a fast stop's exception, for at most 60 s
        until = time.monotonic() + 60
        while time.monotonic() < until:
            try:
                time.sleep(until - time.monotonic())
            except BaseException:  # noqa: BLE001 (the point of this path)
                pass
    if path == "/grow":
        _hoard.append(bytearray(8 * 1024 * 1024))
    if os.environ.get("CRASH_MARKER") and os.path.exists(os.environ["CRASH_MARKER"]):
        os._exit(1)
    body = f"{VERSION} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# A test holds the import while this file exists (at most a minute), to act while a worker
# boots: a slow build on USR2 or HUP, or an import longer than --timeout.
_hold_until = time.monotonic() + 60
while os.environ.get("BOOT_HOLD") and os.path.exists(os.environ["BOOT_HOLD"]) and time.monotonic() < _hold_until:
    time.sleep(0.02)

if os.environ.get("BOOT_MARKER") and os.path.exists(os.environ["BOOT_MARKER"]):
    raise RuntimeError("this build cannot boot (BOOT_MARKER exists)")
