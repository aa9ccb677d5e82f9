"""An app that answers with an environment variable (named by the query string) as the worker
sees it, and with what it saw at import: --env must be in place before the app is imported."""

import os

AT_IMPORT = os.environ.get("PREFORK_TEST_AT_IMPORT", "<unset>")


def app(environ, start_response):
    body = f"{os.environ.get(environ['QUERY_STRING'], '<unset>')} {AT_IMPORT}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
