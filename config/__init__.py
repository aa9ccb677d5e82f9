"""prefork.config — what to run and how: settings table, CLI, config files, app loading, logging."""
