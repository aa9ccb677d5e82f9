"""prefork.config — what to run and how: settings table, CLI, config files, app loading, logging."""

#: The release, read by packaging (pyproject.toml) and by --version. A plain string rather
#: than importlib.metadata, which would cost every server process about 2 MiB.
__version__ = "0.1.0"
