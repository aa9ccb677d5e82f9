"""``python -m prefork.server`` runs the same command as ``prefork``."""

from .main import entry

entry()
