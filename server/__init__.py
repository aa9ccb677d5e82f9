"""prefork.server — the arbiter: owns the listening sockets and the workers' lives."""

from prefork.config import __version__

from .api import serve  # the Python API: `from prefork.server import serve`

__all__ = ["__version__", "serve"]
