"""Werkzeug's development server as the reference the comparison tests hold prefork to.

    WERKZEUG_SERVER_FD=5 WERKZEUG_RUN_MAIN=true python werkzeug_runner.py MODULE:APP

serves APP with ``werkzeug.serving.run_simple`` (threaded, so HTTP/1.1 with keep-alive) on the
listening socket in fd 5, which the test bound and holds. That is Werkzeug's own hand-over: its
reloader passes the socket to the serving process in WERKZEUG_SERVER_FD and marks that process
with WERKZEUG_RUN_MAIN, and run_simple then adopts the fd instead of binding — no port race.
The app is loaded with prefork's own loader, so both servers run the very same object.
"""

from __future__ import annotations

import logging
import sys

from werkzeug.serving import run_simple

from prefork.config.appload import load_app

USAGE = "usage: WERKZEUG_SERVER_FD=N WERKZEUG_RUN_MAIN=true werkzeug_runner.py MODULE:APP"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(USAGE, file=sys.stderr)
        return 2
    app = load_app(argv[0])
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    # host and port are ignored when the fd is adopted; they only label the startup message.
    run_simple("127.0.0.1", 0, app, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
