"""A Flask application that uses what real Flask applications use, for tests/integration/test_flask.py.

Routes answer with JSON that shows what the application saw (converted path parts, query
arguments, form fields, uploaded files' digests, cookies, REMOTE_ADDR), so a test can check
the server's environ through the framework rather than around it. Files served by
``send_file`` come from the directory in $FLASK_APP_FILES, which the test fills.

``PROPAGATE_EXCEPTIONS`` is on, so an unhandled exception reaches the server (as it does
under a debugger or with Sentry's middleware) and the 500 comes from prefork, not Flask.

``/raw/sendfile/<name>`` bypasses Flask (a WSGI middleware in front of ``app.wsgi_app``, the
way Flask documents middleware) and returns ``environ['wsgi.file_wrapper']`` around a file
whose ``read`` fails: only a server that hands the file descriptor to ``sendfile`` can send it.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import (Flask, Response, abort, jsonify, redirect, request, send_file, session,
                   stream_with_context, url_for)

FILES_ENV = "FLASK_APP_FILES"
RAW_SENDFILE_PREFIX = "/raw/sendfile/"

app = Flask(__name__)
app.config.update(SECRET_KEY="tests-only, not a secret", PROPAGATE_EXCEPTIONS=True)


def _file_path(name: str) -> str:
    """A file of the test's directory; no path separators, so nothing outside it."""
    if "/" in name or name.startswith("."):
        abort(404)
    path = os.path.join(os.environ[FILES_ENV], name)
    if not os.path.isfile(path):
        abort(404)
    return path


@app.get("/")
def index() -> str:
    return "Hello from Flask\n"


@app.get("/items/<name>")
def item(name: str) -> Response:
    return jsonify(name=name, path=request.path)


@app.get("/files/<path:subpath>")
def nested(subpath: str) -> Response:
    return jsonify(subpath=subpath, path=request.path)


@app.get("/num/<int:number>")
def number(number: int) -> Response:
    return jsonify(number=number, doubled=number * 2)


@app.get("/query")
def query() -> Response:
    return jsonify(args=request.args.to_dict(flat=False), query=request.query_string.decode())


@app.post("/json")
def json_echo() -> Response:
    data = request.get_json()
    return jsonify(received=data, kind=type(data).__name__)


@app.post("/form")
def form() -> Response:
    return jsonify(form=request.form.to_dict(flat=False))


@app.post("/upload")
def upload() -> Response:
    files = {}
    for field, storage in request.files.items(multi=True):
        digest = hashlib.sha256()
        size = 0
        while chunk := storage.stream.read(1 << 16):
            digest.update(chunk)
            size += len(chunk)
        files[field] = {"filename": storage.filename, "size": size, "sha256": digest.hexdigest()}
    return jsonify(files=files, form=request.form.to_dict())


@app.route("/download/<name>", methods=["GET", "HEAD"])
def download(name: str) -> Response:
    response = send_file(_file_path(name), mimetype="application/octet-stream")
    wrapper = request.environ.get("wsgi.file_wrapper")
    # Which file wrapper carries the body: the server's (-> sendfile) or Werkzeug's fallback.
    response.headers["X-File-Wrapper"] = (
        f"{wrapper.__module__}.{wrapper.__qualname__}" if wrapper else "absent")
    return response


@app.get("/stream")
def stream() -> Response:
    def lines() -> Iterator[str]:
        # request is only reachable here thanks to stream_with_context.
        for i in range(int(request.args.get("n", "10"))):
            yield f"line {i} of {request.path}\n"
    return Response(stream_with_context(lines()), mimetype="text/plain")


@app.get("/session/incr")
def session_incr() -> Response:
    session["count"] = session.get("count", 0) + 1
    return jsonify(count=session["count"])


@app.get("/cookies/set")
def cookies_set() -> Response:
    response = jsonify(set=sorted(request.args))
    for name, value in request.args.items():
        response.set_cookie(name, value, httponly=True, samesite="Lax")
    return response


@app.get("/cookies")
def cookies() -> Response:
    return jsonify(cookies=request.cookies.to_dict())


@app.get("/redirect")
def go_home() -> Response:
    return redirect(url_for("index"))


@app.get("/moved/<name>")
def moved(name: str) -> Response:
    return redirect(url_for("item", name=name), code=301)


@app.get("/missing")
def missing() -> Response:
    abort(404)


@app.get("/boom")
def boom() -> Response:
    raise RuntimeError("deliberate failure in a Flask view")


@app.get("/remote")
def remote() -> Response:
    return jsonify(remote_addr=request.remote_addr, scheme=request.scheme)


class UnreadableFile(io.FileIO):
    """A real file that refuses to be read through Python: its bytes can only leave through
    its descriptor, i.e. by ``sendfile``."""

    def read(self, size: int = -1) -> bytes:
        raise OSError("read() called: the server iterated the file instead of using sendfile")

    readall = read

    def readinto(self, buffer: Any) -> int:
        raise OSError("readinto() called: the server iterated the file instead of using sendfile")


def raw_routes(wsgi_app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Serve RAW_SENDFILE_PREFIX + name with the server's wsgi.file_wrapper; the rest is Flask's."""
    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(RAW_SENDFILE_PREFIX):
            return wsgi_app(environ, start_response)
        name = path[len(RAW_SENDFILE_PREFIX):]
        full = os.path.join(os.environ[FILES_ENV], name)
        wrapper = environ.get("wsgi.file_wrapper")
        if "/" in name or wrapper is None or not os.path.isfile(full):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no such file, or no wsgi.file_wrapper\n"]
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return wrapper(UnreadableFile(full, "r"))
    return middleware


app.wsgi_app = raw_routes(app.wsgi_app)  # type: ignore[method-assign]
