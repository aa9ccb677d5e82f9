"""An app that creates the file named by its query string and answers with its mode: what a
real app's uploads, caches and sqlite files get from the umask the worker runs with."""

import os
import stat
from urllib.parse import unquote


def app(environ, start_response):
    path = unquote(environ["QUERY_STRING"])
    with open(path, "w") as file:
        file.write("created by the app\n")
    body = oct(stat.S_IMODE(os.stat(path).st_mode)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
