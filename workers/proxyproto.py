"""The PROXY protocol (HAProxy), versions 1 and 2: who the client really is, when a TCP load
balancer stands between it and us.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt. The balancer opens the
connection and, before any byte of the client's, sends one header naming the client's address:

    v1  "PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\\r\\n"            text, at most 107 bytes
    v2  12-byte signature, version/command, family/transport, u16 length, addresses, TLVs

``parse_header`` is sans-IO: bytes in, ``(ProxyHeader, consumed)``, ``NEED_DATA`` or a
``ProxyProtocolError`` out. It is strict, because the header decides an address the application
may trust: anything that is not exactly a valid header is an error, detected as early as the
bytes allow (a client that sends ``GET /`` is rejected at its first byte, not after 107).

``recv_header`` is the thin socket side the worker calls. It never reads past the header (it
peeks first), because what follows belongs to someone else: the TLS handshake on an HTTPS
listener, the request head otherwise.

Spec points decided here:

* v1 ``UNKNOWN`` and v2 ``LOCAL`` (the balancer's own health check) and v2 ``AF_UNSPEC`` /
  ``AF_UNIX`` carry no usable client address: ``ProxyHeader.source`` is ``None`` and the
  connection keeps its real peer address, as the spec asks.
* v1 ports are decimal without leading zeros, addresses must match the family (``TCP4``:
  dotted quad without leading zeros, ``TCP6``: an IPv6 address); single spaces only.
* A v2 address block longer than its family needs ends in TLVs, which we skip.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from dataclasses import dataclass
from typing import Final, Literal

from .http import NEED_DATA, Incomplete

__all__ = ["MAX_V1_LENGTH", "NEED_DATA", "ProxyHeader", "ProxyProtocolError", "parse_header",
           "recv_header"]

#: v1: "PROXY TCP6 <39> <39> 65535 65535\r\n" is 104 bytes; the spec rounds the limit to 107.
MAX_V1_LENGTH: Final = 107
V1_PREFIX: Final = b"PROXY "
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: Signature, version/command, family/transport, length.
V2_FIXED_LENGTH: Final = 16
#: Bytes to peek at first: more than a whole v1 header, and the v2 fixed part plus the largest
#: address block (AF_UNIX); a v2 header with TLVs beyond that is read by a second call.
FIRST_PEEK: Final = V2_FIXED_LENGTH + 216

_V2_LOCAL: Final = 0x0
_V2_PROXY: Final = 0x1
_V2_STREAM: Final = 0x1
_V2_DGRAM: Final = 0x2
_V2_INET: Final = 0x1
_V2_INET6: Final = 0x2
# family -> length of its address block (two addresses and, for IP, two ports)
_V2_ADDRESS_LENGTHS: Final = {0x0: 0, _V2_INET: 12, _V2_INET6: 36, 0x3: 216}
_U16: Final = struct.Struct("!H")

# "PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP srcport SP dstport, then CRLF
_PORT_RE: Final = re.compile(r"0|[1-9][0-9]{0,4}")


class ProxyProtocolError(ValueError):
    """Not a valid PROXY header; the connection must be closed. ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What a header says. ``source``/``destination`` are ``(address, port)``, or ``None`` when
    the header carries no client address (v1 UNKNOWN, v2 LOCAL, AF_UNSPEC, AF_UNIX)."""

    version: Literal[1, 2]
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


def parse_header(buf: bytes | bytearray) -> tuple[ProxyHeader, int] | Incomplete:
    """Parse the PROXY header at the start of ``buf``: ``(header, bytes consumed)``, or
    ``NEED_DATA`` while ``buf`` is a valid but incomplete start. Raises ProxyProtocolError."""
    first = buf[:1]
    if first == b"P":
        return _parse_v1(buf)
    if first == b"\r":
        return _parse_v2(buf)
    if not first:
        return NEED_DATA
    raise ProxyProtocolError(f"no PROXY header: starts with {bytes(buf[:8])!r}")


def _parse_v1(buf: bytes | bytearray) -> tuple[ProxyHeader, int] | Incomplete:
    if not V1_PREFIX.startswith(bytes(buf[:len(V1_PREFIX)])):
        raise ProxyProtocolError("v1: does not start with 'PROXY '")
    window = bytes(buf[:MAX_V1_LENGTH])
    end = window.find(b"\r\n")
    if end < 0:
        if b"\n" in window or b"\r" in window[:-1]:
            raise ProxyProtocolError("v1: bare CR or LF")
        if len(window) >= MAX_V1_LENGTH:
            raise ProxyProtocolError(f"v1: no CRLF within {MAX_V1_LENGTH} bytes")
        return NEED_DATA
    try:
        line = window[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("v1: not ASCII") from None
    parts = line.split(" ")
    if parts[1:2] == ["UNKNOWN"]:  # the spec: ignore whatever follows UNKNOWN up to the CRLF
        return ProxyHeader(1, None, None), end + 2
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"v1: malformed header {line!r}")
    version = 4 if parts[1] == "TCP4" else 6
    source = _v1_address(parts[2], parts[4], version)
    destination = _v1_address(parts[3], parts[5], version)
    return ProxyHeader(1, source, destination), end + 2


def _v1_address(host: str, port: str, version: int) -> tuple[str, int]:
    try:
        if "%" in host:  # ipaddress accepts IPv6 scope ids; an address on the wire has none
            raise ValueError(host)
        address = ipaddress.IPv4Address(host) if version == 4 else ipaddress.IPv6Address(host)
    except ValueError:
        raise ProxyProtocolError(f"v1: {host!r} is not an IPv{version} address") from None
    if not _PORT_RE.fullmatch(port) or int(port) > 65535:
        raise ProxyProtocolError(f"v1: {port!r} is not a port")
    return str(address), int(port)


def _parse_v2(buf: bytes | bytearray) -> tuple[ProxyHeader, int] | Incomplete:
    if not V2_SIGNATURE.startswith(bytes(buf[:len(V2_SIGNATURE)])):
        raise ProxyProtocolError("v2: bad signature")
    if len(buf) < V2_FIXED_LENGTH:
        return NEED_DATA
    version, command = buf[12] >> 4, buf[12] & 0xF
    family, transport = buf[13] >> 4, buf[13] & 0xF
    if version != 2:
        raise ProxyProtocolError(f"v2: version {version}, expected 2")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyProtocolError(f"v2: unknown command {command:#x}")
    if family not in _V2_ADDRESS_LENGTHS or transport > _V2_DGRAM:
        raise ProxyProtocolError(f"v2: unknown address family/transport {buf[13]:#04x}")
    (length,) = _U16.unpack_from(buf, 14)
    total = V2_FIXED_LENGTH + length
    if command == _V2_PROXY:
        if length < _V2_ADDRESS_LENGTHS[family]:
            raise ProxyProtocolError(f"v2: {length} bytes cannot hold the addresses of "
                                     f"family {family:#x}")
        if family in (_V2_INET, _V2_INET6) and transport != _V2_STREAM:
            raise ProxyProtocolError("v2: a proxied TCP connection must say STREAM")
    if len(buf) < total:
        return NEED_DATA
    if command == _V2_LOCAL or family not in (_V2_INET, _V2_INET6):
        # LOCAL: the balancer's own health check; AF_UNSPEC / AF_UNIX: no IP address to report
        return ProxyHeader(2, None, None), total
    size = 4 if family == _V2_INET else 16
    ports = 16 + 2 * size
    source = (str(ipaddress.ip_address(bytes(buf[16:16 + size]))), _U16.unpack_from(buf, ports)[0])
    destination = (str(ipaddress.ip_address(bytes(buf[16 + size:ports]))),
                   _U16.unpack_from(buf, ports + 2)[0])
    return ProxyHeader(2, source, destination), total


def recv_header(sock: socket.socket, buf: bytearray) -> ProxyHeader | Incomplete:
    """Read the PROXY header from a non-blocking socket without reading one byte past it.

    ``buf`` holds the header bytes taken off the socket by earlier calls. Peek, parse: when the
    header is complete, consume exactly its remaining bytes and return it (``buf`` is cleared);
    when it is not, every byte available belongs to the header, so take them into ``buf``
    (level-triggered epoll would keep reporting bytes left unread) and return ``NEED_DATA`` —
    also returned when nothing has arrived yet. Raises ProxyProtocolError for an invalid
    header, an EOF or a socket error.
    """
    if len(buf) >= V2_FIXED_LENGTH and buf[:1] == b"\r":  # v2, length known: peek the rest
        want = V2_FIXED_LENGTH + _U16.unpack_from(buf, 14)[0] - len(buf)
    else:
        want = FIRST_PEEK - len(buf)
    try:
        peeked = sock.recv(want, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return NEED_DATA
    except OSError as exc:
        raise ProxyProtocolError(f"connection failed before the PROXY header: {exc}") from None
    if not peeked:
        raise ProxyProtocolError("connection closed before a complete PROXY header")
    result = parse_header(buf + peeked)
    if result is NEED_DATA:
        buf += sock.recv(len(peeked))
        return NEED_DATA
    header, consumed = result  # type: ignore[misc]
    if consumed > len(buf):
        sock.recv(consumed - len(buf))
    buf.clear()
    return header
