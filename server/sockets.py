"""Listening sockets: bind them, or adopt the ones we were handed, and hand them on.

The arbiter owns the listeners for its whole life and across re-execs: a reload never closes
one, so no connection is ever refused during a deploy. Sockets come from three places:

* ``PREFORK_FD=3,4`` — a previous arbiter (USR2 upgrade) or any launcher that pre-bound them
  (this is how Werkzeug's reloader hands its socket over with ``WERKZEUG_SERVER_FD``);
* systemd socket activation — ``LISTEN_FDS`` with ``LISTEN_PID`` naming us;
* ``--bind`` addresses no adopted socket already serves, which we bind ourselves.

Every listener is inheritable and listed in ``PREFORK_FD`` so the next exec finds it.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Final

from prefork.config.binds import BindAddress, default_binds, parse_bind

from .notify import listen_fds

ENV_FDS: Final = "PREFORK_FD"
#: The systemd names of those fds, colon-separated like LISTEN_FDNAMES, so fd://NAME binds
#: still find their sockets after a USR2 re-exec.
ENV_FD_NAMES: Final = "PREFORK_FD_NAMES"
#: Seconds a client may connect without sending anything before the kernel wakes us anyway.
DEFER_ACCEPT_SECONDS: Final = 1
#: struct tcp_info (linux/tcp.h): eight u8 fields, then u32 tcpi_rto, ato, snd_mss, rcv_mss,
#: unacked. Only the prefix up to tcpi_unacked is asked for.
_TCPI_UNACKED: Final = 8 + 4 * 4
_TCP_INFO_SIZE: Final = _TCPI_UNACKED + 4


class BindError(Exception):
    """A listener could not be set up; the message is one line an operator can act on."""


@dataclass
class Listener:
    """A listening socket and what we must do about it on exit."""

    sock: socket.socket
    name: str              # canonical address, as in logs: 127.0.0.1:8000, [::1]:8000, unix:/p
    unlink_path: str | None = None  # a unix socket file we created
    bind: str | None = None  # the --bind it serves (canonical), None if adopted unasked
    fd_name: str | None = None  # systemd's FileDescriptorName= for it, if any

    def url(self, tls: bool = False) -> str:
        if self.name.startswith("unix:"):
            return self.name
        return f"{'https' if tls else 'http'}://{self.name}"

    def close(self, unlink: bool) -> None:
        self.sock.close()
        if unlink and self.unlink_path:
            try:
                os.unlink(self.unlink_path)
            except FileNotFoundError:
                pass


def listen_queue(sock: socket.socket) -> int | None:
    """Connections waiting in a TCP listener's accept queue, as Linux reports it (a listening
    socket's tcpi_unacked, which gunicorn's backlog metric reads too); None elsewhere."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    return struct.unpack_from("I", info, _TCPI_UNACKED)[0]


def socket_name(sock: socket.socket) -> str:
    """The canonical address of a bound socket, the way BindAddress prints it."""
    addr = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        path = addr.decode(errors="replace") if isinstance(addr, bytes) else addr
        return f"unix:{path}"
    if sock.family == socket.AF_INET6:
        return f"[{addr[0]}]:{addr[1]}"
    return f"{addr[0]}:{addr[1]}"


def adopt_inherited(environ: MutableMapping[str, str]) -> list[Listener]:
    """Sockets handed to us: PREFORK_FD first, else systemd's LISTEN_FDS."""
    named: list[tuple[int, str | None]]
    value = environ.get(ENV_FDS, "").strip()
    if value:
        try:
            fds = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise BindError(f"{ENV_FDS}: expected comma-separated fd numbers, got {value!r}") from None
        names = environ.get(ENV_FD_NAMES, "").split(":")
        named = [(fd, names[n] if n < len(names) and names[n] else None) for n, fd in enumerate(fds)]
    else:
        named = listen_fds(environ)
    source = ENV_FDS if value else "LISTEN_FDS"
    return [Listener(_adopt_fd(fd, source), "", fd_name=name) for fd, name in named]


def _adopt_fd(fd: int, source: str) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"{source}: fd {fd} is not a socket we can use: {exc.strerror}") from None
    if sock.type != socket.SOCK_STREAM:
        raise BindError(f"{source}: fd {fd} is not a stream socket")
    return sock


def open_listeners(binds: list[str], backlog: int, environ: MutableMapping[str, str]) -> list[Listener]:
    """Adopt inherited sockets, bind the addresses none of them serves, and export the set.
    No ``--bind`` means the default address, unless sockets were handed to us: then just those."""
    listeners = adopt_inherited(environ)
    if not binds and not listeners:
        binds = default_binds(environ)
    for listener in listeners:
        listener.name = socket_name(listener.sock)
        listener.sock.listen(backlog)  # harmless if already listening; applies our backlog
    adopted = {listener.name for listener in listeners}
    for text in binds:
        address = parse_bind(text)
        if address.kind == "fd":
            _claim_fd(address, listeners)
        elif str(address) not in adopted:
            listeners.append(bind(address, backlog))
    for listener in listeners:
        _tune(listener.sock)
    export(listeners, environ)
    return listeners


def _claim_fd(address: BindAddress, listeners: list[Listener]) -> None:
    """fd://NAME names a socket systemd passed; fd://N any inherited fd (adopted once)."""
    for listener in listeners:
        if (address.name is not None and listener.fd_name == address.name) or \
                listener.sock.fileno() == address.fd:
            listener.bind = str(address)
            return
    if address.name is not None:
        passed = ", ".join(sorted({l.fd_name for l in listeners if l.fd_name})) or "none"
        raise BindError(f"--bind {address}: no socket named {address.name!r} was passed "
                        f"(names passed: {passed}; systemd's FileDescriptorName=)")
    sock = _adopt_fd(address.fd, f"--bind {address}")  # type: ignore[arg-type]
    listeners.append(Listener(sock, socket_name(sock), bind=str(address)))


def export(listeners: list[Listener], environ: MutableMapping[str, str]) -> None:
    for listener in listeners:
        listener.sock.set_inheritable(True)
    environ[ENV_FDS] = ",".join(str(listener.sock.fileno()) for listener in listeners)
    if any(listener.fd_name for listener in listeners):
        environ[ENV_FD_NAMES] = ":".join(listener.fd_name or "" for listener in listeners)
    else:
        environ.pop(ENV_FD_NAMES, None)


def bind(address: BindAddress, backlog: int) -> Listener:
    """Bind and listen on one address, or raise BindError saying what to do about it."""
    if address.kind == "unix":
        return _bind_unix(address.path, backlog)  # type: ignore[arg-type]
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot bind {address}: cannot resolve {address.host!r} ({exc.strerror})") from None
    family, socktype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # Like nginx: [::]:80 then does not grab IPv4 too, so 0.0.0.0:80 can be bound beside it.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(_bind_error(str(address), exc)) from None
    return Listener(sock, socket_name(sock), bind=str(address))


def _bind_unix(path: str, backlog: int) -> Listener:
    _remove_stale_unix_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(_bind_error(f"unix:{path}", exc)) from None
    return Listener(sock, f"unix:{path}", unlink_path=path, bind=f"unix:{path}")


def _remove_stale_unix_socket(path: str) -> None:
    """A socket file left by a crashed server would block the bind: remove it, but only if
    it is a socket nobody answers on — never a live server's, never a regular file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BindError(f"cannot bind unix:{path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError as exc:
        raise BindError(_bind_error(f"unix:{path}", exc)) from None
    finally:
        probe.close()
    raise BindError(f"cannot bind unix:{path}: another server is listening on it")


def _bind_error(name: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot bind {name}: address already in use "
                "(another server is listening there: stop it, or choose another --bind)")
    if exc.errno == errno.EACCES:
        return (f"cannot bind {name}: permission denied (ports below 1024 need root or "
                "CAP_NET_BIND_SERVICE; a systemd socket unit can bind them for you)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot bind {name}: that address is not on this host"
    return f"cannot bind {name}: {exc.strerror or exc}"


def _tune(sock: socket.socket) -> None:
    """Options accepted connections inherit on Linux, set once on the listener: no Nagle delay
    for small responses; accept only once the client has sent something."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_SECONDS)
