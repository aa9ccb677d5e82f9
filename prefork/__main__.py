"""``python -m prefork`` runs the same command as ``prefork``.

This folder holds nothing else on purpose: ``prefork`` stays a namespace package whose parts
are server/, workers/ and config/ (setup.cfg), and this module only gives ``-m`` a target,
for hosts where the venv's bin/ is not on PATH.
"""

from prefork.server.main import entry

entry()
