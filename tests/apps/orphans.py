"""An app whose requests leave orphans behind, as apps that shell out sometimes do: /orphans?N
starts a helper that forks N grandchildren and exits at once, so the grandchildren are
re-parented to PID 1 (prefork, in a container) when they exit a moment later."""

import subprocess
import sys

#: The helper: fork N children that each sleep a moment, then leave without waiting for them.
HELPER = """
import os, sys, time
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        time.sleep(1.0)
        os._exit(0)
os._exit(0)
"""


def app(environ, start_response):
    count = int(environ.get("QUERY_STRING") or 1)
    subprocess.run([sys.executable, "-c", HELPER, str(count)], check=True, timeout=30)
    body = f"left {count} orphans\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
