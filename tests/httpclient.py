"""A minimal raw HTTP/1.1 client for tests that must see exactly what went over the wire:
pipelining, framing, Connection headers, a server closing the connection."""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass, field
from typing import BinaryIO


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunked: bool = False

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def connect(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    return sock


def read_response(f: BinaryIO, head_only: bool = False) -> RawResponse:
    """Read one response; framing by Content-Length, chunked, or until close."""
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed before a response")
    version, status, reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    response = RawResponse(int(status), reason)
    while True:
        line = f.readline().decode("latin-1").rstrip("\r\n")
        if not line:
            break
        name, _, value = line.partition(":")
        response.headers.append((name, value.strip()))
    if head_only or response.status in (204, 304) or response.status < 200:
        return response
    length = response.header("Content-Length")
    if response.header("Transfer-Encoding") == "chunked":
        response.chunked = True
        parts = []
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                f.readline()
                break
            parts.append(f.read(size))
            f.readline()
        response.body = b"".join(parts)
    elif length is not None:
        response.body = f.read(int(length))
    else:
        response.body = f.read()
    return response


def exchange(port: int, data: bytes, count: int = 1, host: str = "127.0.0.1",
             timeout: float = 10.0) -> list[RawResponse]:
    """Send raw bytes, read ``count`` responses."""
    with connect(port, host, timeout) as sock:
        sock.sendall(data)
        f = sock.makefile("rb")
        return [read_response(f) for _ in range(count)]


def unix_request(path: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes over a unix socket and read until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def upload_outcome(client: http.client.HTTPConnection, path: str, size: int) -> int | str:
    """What Python's own http.client makes of POSTing ``size`` bytes: the status it reads, or
    the name of the error it raises instead (a reset, a broken pipe, an unexpected TLS EOF)."""
    try:
        client.request("POST", path, body=b"x" * size)
        return client.getresponse().status
    except OSError as exc:
        return type(exc).__name__
    finally:
        client.close()


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True if the server closes the connection (EOF or reset) within ``timeout``."""
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        if not data:
            return True
    return False
