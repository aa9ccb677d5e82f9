"""prefork.workers — the worker process: event loop, HTTP/1.1 parser, WSGI handler, access log."""
