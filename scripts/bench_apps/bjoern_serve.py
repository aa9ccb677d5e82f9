"""Run a WSGI app under bjoern, which has no command line of its own: `bjoern_serve.py HOST PORT module:callable`.

bjoern is one process and one thread, a C event loop (libev) around a C HTTP parser: the
benchmark's yardstick for what compiled code does per request, not a peer with workers.
"""

import importlib
import sys

import bjoern


def main() -> None:
    host, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    module_name, callable_name = target.split(":")
    sys.path.insert(0, ".")  # the apps directory is the working directory, as for the other servers
    app = getattr(importlib.import_module(module_name), callable_name)
    bjoern.run(app, host, port)


if __name__ == "__main__":
    main()
