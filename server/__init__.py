"""prefork.server — the arbiter: owns the listening sockets and the workers' lives."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prefork")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
