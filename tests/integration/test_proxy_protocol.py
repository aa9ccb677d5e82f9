"""PROXY protocol v1/v2: the parser as a table (whole, byte by byte, with the request that
follows), then a real prefork behind a pretend load balancer on a raw socket."""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest

from conftest import wait_for
from httpclient import closed_by_peer, connect, read_response
from prefork.workers.proxyproto import (
    MAX_V1_LENGTH,
    NEED_DATA,
    ProxyHeader,
    ProxyProtocolError,
    parse_header,
)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
FOLLOWER = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def v2(ver_cmd: int, fam: int, body: bytes, length: int | None = None) -> bytes:
    return SIG + bytes([ver_cmd, fam]) + struct.pack("!H", len(body) if length is None else length) + body


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!HH", sport, dport))


LONGEST_V1 = (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
              b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
UNKNOWN_107 = b"PROXY UNKNOWN " + b"x" * (MAX_V1_LENGTH - 16) + b"\r\n"

VALID = {
    "v1-tcp4": (b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
                ProxyHeader(1, ("192.0.2.1", 56324), ("198.51.100.2", 443))),
    "v1-tcp6": (b"PROXY TCP6 2001:db8::1 2001:db8:0:0::2 0 65535\r\n",
                ProxyHeader(1, ("2001:db8::1", 0), ("2001:db8::2", 65535))),
    "v1-longest-tcp6": (LONGEST_V1, ProxyHeader(1, ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
                                                ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535))),
    "v1-unknown": (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None, None)),
    "v1-unknown-with-addresses-ignored": (b"PROXY UNKNOWN ::1 ::2 1 2\r\n", ProxyHeader(1, None, None)),
    "v1-unknown-107-bytes": (UNKNOWN_107, ProxyHeader(1, None, None)),
    "v2-tcp4": (v2(0x21, 0x11, inet("203.0.113.7", "192.0.2.1", 56324, 443)),
                ProxyHeader(2, ("203.0.113.7", 56324), ("192.0.2.1", 443))),
    "v2-tcp6": (v2(0x21, 0x21, inet6("2001:db8::7", "2001:db8::1", 1, 8443)),
                ProxyHeader(2, ("2001:db8::7", 1), ("2001:db8::1", 8443))),
    "v2-tcp4-with-tlvs": (v2(0x21, 0x11, inet("203.0.113.7", "192.0.2.1", 1, 2) + b"\x04\x00\x03abc"),
                          ProxyHeader(2, ("203.0.113.7", 1), ("192.0.2.1", 2))),
    "v2-local-unspec": (v2(0x20, 0x00, b""), ProxyHeader(2, None, None)),
    "v2-local-ignores-content": (v2(0x20, 0x11, b"\xff" * 5), ProxyHeader(2, None, None)),
    "v2-proxy-unspec": (v2(0x21, 0x00, b""), ProxyHeader(2, None, None)),
    "v2-unix": (v2(0x21, 0x31, b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0")),
                ProxyHeader(2, None, None)),
}

INVALID = {
    "http-request": FOLLOWER,
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "v1-lowercase": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1-bare-lf": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "v1-bare-cr": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n",
    "v1-too-long": b"PROXY UNKNOWN " + b"x" * (MAX_V1_LENGTH - 15) + b"\r\n",
    "v1-no-crlf-within-limit": b"PROXY UNKNOWN " + b"x" * 200,
    "v1-unknown-protocol": b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1-missing-port": b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "v1-extra-field": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    "v1-double-space": b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
    "v1-tcp4-with-ipv6": b"PROXY TCP4 ::1 ::2 1 2\r\n",
    "v1-tcp6-with-ipv4": b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1-ipv4-leading-zero": b"PROXY TCP4 192.000.2.1 5.6.7.8 1 2\r\n",
    "v1-ipv6-scope-id": b"PROXY TCP6 fe80::1%eth0 ::2 1 2\r\n",
    "v1-port-leading-zero": b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
    "v1-port-too-big": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    "v1-port-sign": b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    "v1-non-ascii": "PROXY UNKNOWN é\r\n".encode(),
    "v2-bad-signature": SIG[:11] + b"X" + bytes([0x21, 0x11, 0, 12]) + inet("1.2.3.4", "5.6.7.8", 1, 2),
    "v2-version-1": v2(0x11, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)),
    "v2-unknown-command": v2(0x22, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)),
    "v2-unknown-family": v2(0x21, 0x41, inet("1.2.3.4", "5.6.7.8", 1, 2)),
    "v2-unknown-transport": v2(0x21, 0x13, inet("1.2.3.4", "5.6.7.8", 1, 2)),
    "v2-inet-too-short": v2(0x21, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)[:8]),
    "v2-inet6-too-short": v2(0x21, 0x21, inet("1.2.3.4", "5.6.7.8", 1, 2)),
    "v2-tcp-over-dgram": v2(0x21, 0x12, inet("1.2.3.4", "5.6.7.8", 1, 2)),
}


@pytest.mark.parametrize("name", VALID)
def test_valid_header_whole_byte_by_byte_and_with_follower(name):
    data, expected = VALID[name]
    assert parse_header(data) == (expected, len(data))
    for end in range(len(data)):  # every strict prefix is "not yet"
        assert parse_header(data[:end]) is NEED_DATA, f"prefix of {end} bytes"
    assert parse_header(bytearray(data + FOLLOWER)) == (expected, len(data))


@pytest.mark.parametrize("name", INVALID)
def test_invalid_header_is_rejected(name):
    data = INVALID[name]
    with pytest.raises(ProxyProtocolError):
        parse_header(data)
    with pytest.raises(ProxyProtocolError):
        parse_header(data + FOLLOWER)
    for end in range(len(data)):  # never a header from a prefix of an invalid one
        try:
            assert parse_header(data[:end]) is NEED_DATA
        except ProxyProtocolError:
            pass


@pytest.mark.parametrize("data", [b"G", b"\x16", b"PROXX", SIG[:5] + b"x", b"PROXY UNKNOWN\r\r"])
def test_garbage_is_rejected_without_waiting_for_more(data):
    with pytest.raises(ProxyProtocolError):
        parse_header(data)


def test_empty_buffer_needs_data():
    assert parse_header(b"") is NEED_DATA


# -- a real prefork behind a pretend load balancer -------------------------------------------------


def environ_via(port: int, header: bytes, request: bytes = b"GET /environ HTTP/1.1\r\nHost: t\r\n\r\n",
                pause: float = 0.0) -> dict:
    """Send ``header`` (split in two with a pause, if asked) then the request; the environ."""
    with connect(port) as sock:
        if pause:
            sock.sendall(header[:len(header) // 2])
            time.sleep(pause)
            sock.sendall(header[len(header) // 2:] + request)
        else:
            sock.sendall(header + request)
        response = read_response(sock.makefile("rb"))
    assert response.status == 200
    return json.loads(response.body)


def start_proxied(start_server, *args: str):
    server = start_server("basic:app", "--proxy-protocol", *args, workers=1, probe="")
    wait_for(lambda: _answers_with_header(server.port), 20, message="first proxied response")
    return server


def _answers_with_header(port: int) -> bool:
    try:
        environ_via(port, b"PROXY UNKNOWN\r\n")
    except (OSError, ConnectionError):
        return False
    return True


def assert_closed_unanswered(sock: socket.socket) -> None:
    """EOF or a reset (the server closed with our bytes unread), and not one byte of answer."""
    sock.settimeout(5)
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        return
    assert data == b"", "nothing may be answered before a valid PROXY header"


def test_v1_and_v2_headers_set_the_client_address(start_server):
    server = start_proxied(start_server)
    environ = environ_via(server.port, b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n")
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("203.0.113.7", "56324")
    environ = environ_via(server.port, v2(0x21, 0x21, inet6("2001:db8::7", "2001:db8::1", 4242, 443)))
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("2001:db8::7", "4242")


def test_header_arriving_in_pieces_is_assembled(start_server):
    server = start_proxied(start_server)
    environ = environ_via(server.port, v2(0x21, 0x11, inet("203.0.113.9", "192.0.2.1", 1000, 443)
                                          + b"\x04\x00\x10" + b"t" * 16), pause=0.3)
    assert environ["REMOTE_ADDR"] == "203.0.113.9"
    environ = environ_via(server.port, b"PROXY TCP4 203.0.113.8 192.0.2.1 1001 443\r\n", pause=0.3)
    assert environ["REMOTE_ADDR"] == "203.0.113.8"


def test_local_and_unknown_keep_the_real_peer(start_server):
    server = start_proxied(start_server)
    for header in (v2(0x20, 0x00, b""), b"PROXY UNKNOWN\r\n"):
        environ = environ_via(server.port, header)
        assert environ["REMOTE_ADDR"] == "127.0.0.1"


def test_keep_alive_requests_keep_the_forwarded_address(start_server):
    server = start_proxied(start_server)
    request = b"GET /environ HTTP/1.1\r\nHost: t\r\n\r\n"
    with connect(server.port) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n" + request)
        f = sock.makefile("rb")
        first = json.loads(read_response(f).body)
        sock.sendall(request)
        second = json.loads(read_response(f).body)
    assert first["REMOTE_ADDR"] == second["REMOTE_ADDR"] == "203.0.113.7"


def test_forwarded_headers_are_judged_by_the_proxied_client(start_server):
    """The PROXY header names the client; that client is not a trusted HTTP proxy, so the
    X-Forwarded-For it sends is not believed."""
    server = start_proxied(start_server)
    environ = environ_via(server.port, b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n",
                          b"GET /environ HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n")
    assert environ["REMOTE_ADDR"] == "203.0.113.7"


@pytest.mark.parametrize("first_bytes", [
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",                  # no header at all
    b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",  # malformed
    b"PROXY TCP4 1.2.3.4",                                 # truncated, then EOF
])
def test_connection_without_a_valid_header_is_closed_unanswered(start_server, first_bytes):
    server = start_proxied(start_server)
    pid = server.worker_pids()
    with connect(server.port) as sock:
        sock.sendall(first_bytes)
        if not first_bytes.endswith(b"\r\n\r\n"):
            sock.shutdown(socket.SHUT_WR)
        assert_closed_unanswered(sock)
    assert environ_via(server.port, b"PROXY UNKNOWN\r\n")["REMOTE_ADDR"] == "127.0.0.1"
    assert server.worker_pids() == pid


def test_peer_not_allowed_to_send_a_header_is_closed(start_server):
    server = start_server("basic:app", "--proxy-protocol", "--proxy-allow-from", "10.0.0.1",
                          workers=1, probe="")
    with connect(server.port) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert closed_by_peer(sock)
    with connect(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert_closed_unanswered(sock)
