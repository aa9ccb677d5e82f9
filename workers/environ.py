"""The WSGI environ, built in one place.

Three layers, each computed as rarely as it can be: ``base_environ`` per listener (the keys
every request on it shares), the peer's address per connection (``Connection.remote_addr``,
which a PROXY header may have set), and the request's own keys in ``EnvironBuilder.build``, the
one function that assembles a request's environ: one dict copy plus what varies.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote_to_bytes

from .filewrapper import FileWrapper
from .proxy import ForwardedTrust
from .response import SERVER_SOFTWARE

if TYPE_CHECKING:
    from .connection import Connection
    from .http import Request

# Environ key per request header name; "" for names that contain "_" (dropped: a client must
# not be able to spoof X-Auth-User through X_Auth_User, as two names map to one key).
_environ_keys: dict[str, str] = {"Content-Type": "CONTENT_TYPE", "Content-Length": "CONTENT_LENGTH"}
_ENVIRON_KEYS_MAX: Final = 4096
#: The request header a trusted proxy sets to tell us the prefix it serves us under
#: (gunicorn's convention); its "_" means no client can send it through a plain proxy.
_SCRIPT_NAME_HEADER: Final = "SCRIPT_NAME"
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def _environ_key(name: str) -> str:
    key = _environ_keys.get(name)
    if key is None:
        if "_" in name:
            key = ""
        else:
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
        if len(_environ_keys) < _ENVIRON_KEYS_MAX:
            _environ_keys[name] = key
    return key


def _split_host(host: str, scheme: str) -> tuple[str, str]:
    """``Host`` as (SERVER_NAME, SERVER_PORT); the scheme's port when it names none."""
    name, sep, port = host.rpartition(":")
    if not sep or "]" in port:  # no port, or the colon was inside an IPv6 literal
        return host or "localhost", _DEFAULT_PORTS.get(scheme, "80")
    return name or "localhost", port or _DEFAULT_PORTS.get(scheme, "80")


class EnvironBuilder:
    """Builds each request's environ for one worker's settings."""

    __slots__ = ("root_path", "proxy")

    def __init__(self, root_path: str, proxy: ForwardedTrust) -> None:
        self.root_path = root_path.rstrip("/")
        self.proxy = proxy

    def build(self, conn: Connection, req: Request, body: Any, body_length: int | None) -> dict[str, Any]:
        """PEP 3333's environ: the connection's copy plus this request's keys.

        PATH_INFO is percent-decoded, then latin-1 (bytes as str); SCRIPT_NAME is --root-path,
        or a trusted proxy's ``SCRIPT_NAME`` header, and is cut off the front of PATH_INFO when
        the path starts with it (a proxy that strips the prefix itself is served too). Repeated
        headers are joined with ", " (Cookie with "; ", RFC 6265 §5.4); names containing "_"
        are dropped.
        """
        environ = conn.environ.copy()
        environ["REMOTE_ADDR"] = conn.remote_addr
        environ["REMOTE_PORT"] = conn.remote_port
        environ["REQUEST_METHOD"] = req.method
        environ["QUERY_STRING"] = req.query
        environ["RAW_URI"] = req.target  # gunicorn's name, read by some frameworks
        environ["SERVER_PROTOCOL"] = req.version
        environ["wsgi.input"] = body
        script_name = None
        get_key = _environ_keys.get
        for name, value in req.headers:
            key = get_key(name)
            if key is None:
                key = _environ_key(name)
            if not key:
                if conn.trusted and name.upper() == _SCRIPT_NAME_HEADER:
                    script_name = value
                continue
            if key not in environ:
                environ[key] = value
            elif key == "CONTENT_LENGTH":  # repeated, and equal (the parser checked): one number
                environ[key] = str(req.content_length)
            else:
                environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        if req.target[0] != "/":
            _, sep, rest = req.target.partition("://")
            if sep:  # absolute-form: its authority outranks Host (RFC 9112 §3.2.2)
                environ["HTTP_HOST"] = rest.split("/", 1)[0].split("?", 1)[0]
        if body_length is not None:  # a chunked body, decoded and buffered: now it has a length
            environ["CONTENT_LENGTH"] = str(body_length)
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        if conn.trusted and ("HTTP_X_FORWARDED_FOR" in environ or "HTTP_FORWARDED" in environ
                             or "HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_SSL" in environ
                             or "HTTP_X_FORWARDED_PROTOCOL" in environ):
            self.proxy.apply(environ)  # (the headers it reads: without one, nothing to apply)

        path = req.path
        if "%" in path:
            path = unquote_to_bytes(path).decode("latin-1")
        root = self.root_path
        if script_name is not None:
            script_name = script_name.rstrip("/")
            if not script_name or script_name[0] == "/":
                root = environ["SCRIPT_NAME"] = script_name
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root):]
        environ["PATH_INFO"] = path
        if not environ["SERVER_PORT"]:  # a unix socket has none; PEP 3333 wants both: use Host
            environ["SERVER_NAME"], environ["SERVER_PORT"] = _split_host(
                environ.get("HTTP_HOST", ""), environ["wsgi.url_scheme"])
        return environ


def base_environ(server_name: str, server_port: str, scheme: str, *, multithread: bool,
                 root_path: str) -> dict[str, Any]:
    """The environ keys that are the same for every request on one listener; copied per
    request, so building a request's environ is one dict copy plus its own keys.

    ``server_port`` is "" for a unix socket: make_environ then takes both from ``Host``.
    ``wsgi.multiprocess`` is always true: even with one worker, a reload (HUP) runs the old
    and the new generation side by side, and TTIN can add a worker at any time.
    """
    return {
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SCRIPT_NAME": root_path.rstrip("/"),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }
