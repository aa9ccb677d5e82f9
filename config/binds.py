"""Listen addresses: the text of `-b/--bind` parsed into a `BindAddress`.

Forms (gunicorn's, plus `unix://PATH`):

    HOST:PORT        127.0.0.1:8000, localhost:8000 (a hostname is resolved when binding)
    [IPv6]:PORT      [::1]:8000, [::]:8000
    HOST             port DEFAULT_PORT (8000)
    :PORT            every IPv4 interface (0.0.0.0), as nginx's `listen 8000`
    unix:PATH        also unix://PATH
    fd://N           a socket inherited on file descriptor N

Parsing checks syntax only; nothing is resolved or bound here. An unbracketed IPv6 address is
refused rather than guessed at: in `::1:8000` the port is ambiguous.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .settings import ConfigError

DEFAULT_PORT = 8000
DEFAULT_HOST = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
MAX_PORT = 65535
UNIX_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path) on Linux, including the terminating NUL

_PORT = re.compile(r"[0-9]{1,5}")
# RFC 1123 host names; `_` is allowed because container and service-discovery names use it.
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
_HOSTNAME_MAX = 253
# systemd's FileDescriptorName=: up to 255 printable ASCII characters, no colon (the separator
# of LISTEN_FDNAMES) and no space.
_FD_NAME = re.compile(r"[!-9;-~]{1,255}")


@dataclass(frozen=True)
class BindAddress:
    """One parsed listen address. `kind` says which of the other fields are set."""

    kind: Literal["tcp", "unix", "fd"]
    host: str | None = None  # tcp: an IP literal (IPv6 without brackets) or a host name
    port: int | None = None  # tcp
    path: str | None = None  # unix
    fd: int | None = None  # fd://N
    name: str | None = None  # fd://NAME: a socket systemd passed with FileDescriptorName=NAME

    @property
    def family(self) -> socket.AddressFamily | None:
        """AF_INET/AF_INET6 for an IP literal, AF_UNIX, None for an inherited fd (ask the
        socket). A host name gives AF_UNSPEC: its family is known only after getaddrinfo."""
        if self.kind == "unix":
            return socket.AF_UNIX
        if self.kind == "fd":
            return None
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            return socket.AF_UNSPEC
        return socket.AF_INET6 if ip.version == 6 else socket.AF_INET

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd if self.fd is not None else self.name}"
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_bind(text: str, setting: str = "--bind") -> BindAddress:
    """Parse one address; ConfigError(`--bind: cannot parse 'x': why`) if it is not one."""
    try:
        return _parse(text.strip())
    except ValueError as exc:
        raise ConfigError(f"{setting}: cannot parse {text!r}: {exc}") from None


def default_binds(environ: Mapping[str, str]) -> list[str]:
    """What to bind when no -b is given: 0.0.0.0:$PORT on platforms that set PORT (Heroku and
    friends route to that port from outside, so it must listen on every interface), else the
    safe 127.0.0.1:8000."""
    port = environ.get("PORT", "")
    if not port:
        return [f"{DEFAULT_HOST}:{DEFAULT_PORT}"]
    if not _PORT.fullmatch(port) or int(port) > MAX_PORT:
        raise ConfigError(f"PORT: must be a port number 0-{MAX_PORT}, got {port!r}")
    return [f"{ALL_INTERFACES}:{int(port)}"]


def _parse(text: str) -> BindAddress:
    if not text:
        raise ValueError("empty address")
    if text.startswith("unix:"):
        return _unix(text.removeprefix("unix:").removeprefix("//"))
    if text.startswith("fd://"):
        ref = text.removeprefix("fd://")
        if ref.isascii() and ref.isdigit():
            return BindAddress("fd", fd=int(ref))
        if not _FD_NAME.fullmatch(ref):
            raise ValueError("expected fd://N (a number) or fd://NAME (systemd's FileDescriptorName=)")
        return BindAddress("fd", name=ref)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(f"unknown scheme {scheme!r}; use HOST:PORT, unix:PATH or fd://N")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("expected [IPv6]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
        return BindAddress("tcp", host=host, port=_port(rest[1:]) if rest else DEFAULT_PORT)
    if text.count(":") > 1:
        raise ValueError("an IPv6 address needs brackets, as in [::1]:8000")
    host, colon, port = text.partition(":")
    if not colon and host.isdigit():
        raise ValueError(f"a bare number is not an address; for a port write ':{host}'")
    return BindAddress("tcp", host=_host(host) if host else ALL_INTERFACES,
                       port=_port(port) if colon else DEFAULT_PORT)


def _unix(path: str) -> BindAddress:
    if not path:
        raise ValueError("missing socket path, as in unix:/run/app.sock")
    if "\0" in path:
        raise ValueError("NUL in socket path")
    if len(path.encode()) >= UNIX_PATH_MAX:
        raise ValueError(f"socket path longer than {UNIX_PATH_MAX - 1} bytes")
    return BindAddress("unix", path=path)


def _port(text: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > MAX_PORT:
        raise ValueError(f"port must be a number 0-{MAX_PORT}")
    return int(text)


def _host(host: str) -> str:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address") from None
    elif len(host) > _HOSTNAME_MAX or not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} is not a valid host name")
    return host
