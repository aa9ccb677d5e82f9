"""X-Forwarded-*, Forwarded and --forwarded-allow-ips: forwarding headers change REMOTE_ADDR
and wsgi.url_scheme only when the peer is a trusted proxy. Unit tables for ForwardedTrust,
then a real prefork with loopback trusted (the default) and not trusted (10.0.0.0/8)."""

from __future__ import annotations

import json

import pytest

from prefork.workers.proxy import ForwardedTrust

from httpclient import exchange

TRUSTS = [
    ("127.0.0.1,::1", "127.0.0.1", True),
    ("127.0.0.1,::1", "::1", True),
    ("127.0.0.1,::1", "::ffff:127.0.0.1", True),  # IPv4-mapped, as a dual-stack socket reports it
    ("127.0.0.1,::1", "127.0.0.2", False),
    ("127.0.0.1,::1", "", True),  # a unix-socket peer
    ("10.0.0.0/8", "10.20.30.40", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    ("10.0.0.0/8", "127.0.0.1", False),
    (" 192.168.1.0/24 , fd00::/8 ", "fd12::1", True),
    ("192.168.1.0/24,fd00::/8", "fe80::1%eth0", False),
    ("fe80::/10", "fe80::1%eth0", True),  # zone index ignored
    ("*", "203.0.113.5", True),
    ("*", "not an address", True),
    ("127.0.0.1", "not an address", False),
    ("127.0.0.1", "127.0.0.1:80", False),
]


@pytest.mark.parametrize("spec, addr, trusted", TRUSTS)
def test_trusts(spec, addr, trusted):
    assert ForwardedTrust(spec).trusts(addr) is trusted


PEER = "10.0.0.2"
APPLY = {
    "no headers": ({}, PEER, "http"),
    "x-forwarded-for, one hop": ({"HTTP_X_FORWARDED_FOR": "203.0.113.7"}, "203.0.113.7", "http"),
    "x-forwarded-for, client-chosen entries on the left are skipped": (
        {"HTTP_X_FORWARDED_FOR": "1.1.1.1, 203.0.113.7, 10.0.0.9"}, "203.0.113.7", "http"),
    "x-forwarded-for, all trusted: the leftmost": ({"HTTP_X_FORWARDED_FOR": "10.1.1.1, 10.0.0.9"}, "10.1.1.1", "http"),
    "x-forwarded-for with a port": ({"HTTP_X_FORWARDED_FOR": "203.0.113.7:5555"}, "203.0.113.7", "http"),
    "x-forwarded-for, IPv6": ({"HTTP_X_FORWARDED_FOR": "2001:db8::7"}, "2001:db8::7", "http"),
    "x-forwarded-for, bracketed IPv6 with port": ({"HTTP_X_FORWARDED_FOR": "[2001:db8::7]:80"}, "2001:db8::7", "http"),
    "x-forwarded-for, garbage is not an address": ({"HTTP_X_FORWARDED_FOR": "<script>"}, PEER, "http"),
    "x-forwarded-proto": ({"HTTP_X_FORWARDED_PROTO": "https"}, PEER, "https"),
    "x-forwarded-proto, upper case": ({"HTTP_X_FORWARDED_PROTO": "HTTPS"}, PEER, "https"),
    "x-forwarded-proto, unknown scheme ignored": ({"HTTP_X_FORWARDED_PROTO": "gopher"}, PEER, "http"),
    "x-forwarded-proto, one per hop: the client's": (
        {"HTTP_X_FORWARDED_FOR": "203.0.113.7, 10.0.0.9", "HTTP_X_FORWARDED_PROTO": "https, http"},
        "203.0.113.7", "https"),
    "x-forwarded-proto, a single one is the last proxy's": (
        {"HTTP_X_FORWARDED_FOR": "203.0.113.7, 10.0.0.9", "HTTP_X_FORWARDED_PROTO": "https"},
        "203.0.113.7", "https"),
    "x-forwarded-ssl": ({"HTTP_X_FORWARDED_SSL": "on"}, PEER, "https"),
    "x-forwarded-ssl off": ({"HTTP_X_FORWARDED_SSL": "off"}, PEER, "http"),
    "x-forwarded-protocol: ssl (gunicorn's third default)": (
        {"HTTP_X_FORWARDED_PROTOCOL": "ssl"}, PEER, "https"),
    "x-forwarded-protocol, upper case": ({"HTTP_X_FORWARDED_PROTOCOL": "SSL"}, PEER, "https"),
    "x-forwarded-protocol other than ssl": ({"HTTP_X_FORWARDED_PROTOCOL": "tcp"}, PEER, "http"),
    "x-forwarded-proto wins over -protocol": (
        {"HTTP_X_FORWARDED_PROTO": "http", "HTTP_X_FORWARDED_PROTOCOL": "ssl"}, PEER, "http"),
    "x-forwarded-proto wins over -ssl": (
        {"HTTP_X_FORWARDED_PROTO": "http", "HTTP_X_FORWARDED_SSL": "on"}, PEER, "http"),
    "forwarded": ({"HTTP_FORWARDED": "for=203.0.113.7;proto=https"}, "203.0.113.7", "https"),
    "forwarded, quoted IPv6 with port": (
        {"HTTP_FORWARDED": 'for="[2001:db8::7]:4711";proto=https;by=10.0.0.2'}, "2001:db8::7", "https"),
    "forwarded, several elements: the client's proto": (
        {"HTTP_FORWARDED": "for=1.1.1.1;proto=http, for=203.0.113.7;proto=https, for=10.0.0.9;proto=http"},
        "203.0.113.7", "https"),
    "forwarded, case-insensitive names": ({"HTTP_FORWARDED": "For=203.0.113.7;Proto=HTTPS"}, "203.0.113.7", "https"),
    "forwarded, unknown leaves the peer": ({"HTTP_FORWARDED": "for=unknown;proto=https"}, PEER, "https"),
    "forwarded, obfuscated leaves the peer": ({"HTTP_FORWARDED": "for=_hidden"}, PEER, "http"),
    "forwarded wins over x-forwarded-*": (
        {"HTTP_FORWARDED": "for=203.0.113.7", "HTTP_X_FORWARDED_FOR": "198.51.100.1",
         "HTTP_X_FORWARDED_PROTO": "https"}, "203.0.113.7", "http"),
}


@pytest.mark.parametrize("headers, remote_addr, scheme", APPLY.values(), ids=APPLY.keys())
def test_apply(headers, remote_addr, scheme):
    environ = {"REMOTE_ADDR": PEER, "wsgi.url_scheme": "http", **headers}
    ForwardedTrust("10.0.0.0/8").apply(environ)
    assert (environ["REMOTE_ADDR"], environ["wsgi.url_scheme"]) == (remote_addr, scheme)


# -- a real prefork ------------------------------------------------------------------------------

FORWARDING = {
    "x-forwarded": (b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n", "203.0.113.7", "https"),
    "x-forwarded-ssl": (b"X-Forwarded-For: 203.0.113.8\r\nX-Forwarded-Ssl: on\r\n", "203.0.113.8", "https"),
    "forwarded": (b'Forwarded: for="[2001:db8::9]:1234";proto=https\r\n', "2001:db8::9", "https"),
    "x-forwarded-protocol alone": (b"X-Forwarded-Protocol: ssl\r\n", "127.0.0.1", "https"),
}


def seen(port: int, headers: bytes) -> tuple[str, str]:
    (response,) = exchange(port, b"GET /environ HTTP/1.1\r\nHost: t\r\n%s\r\n" % headers)
    environ = json.loads(response.body)
    return environ["REMOTE_ADDR"], environ["wsgi.url_scheme"]


@pytest.mark.parametrize("headers, remote_addr, scheme", FORWARDING.values(), ids=FORWARDING.keys())
def test_trusted_loopback_proxy_sets_client_address_and_scheme(start_server, headers, remote_addr, scheme):
    server = start_server("wsgi_cases:app", workers=1)  # default --forwarded-allow-ips: loopback
    assert seen(server.port, headers) == (remote_addr, scheme)


@pytest.mark.parametrize("headers", [h for h, _, _ in FORWARDING.values()], ids=FORWARDING.keys())
def test_untrusted_peer_cannot_change_address_or_scheme(start_server, headers):
    server = start_server("wsgi_cases:app", "--forwarded-allow-ips", "10.0.0.0/8", workers=1)
    assert seen(server.port, headers) == ("127.0.0.1", "http")


def test_allow_all_and_environment_variable(start_server):
    server = start_server("wsgi_cases:app", "--forwarded-allow-ips", "*", workers=1,
                          env={"FORWARDED_ALLOW_IPS": "10.0.0.0/8"})
    assert seen(server.port, FORWARDING["x-forwarded"][0]) == ("203.0.113.7", "https")
    server = start_server("wsgi_cases:app", workers=1, env={"FORWARDED_ALLOW_IPS": "10.0.0.0/8"})
    assert seen(server.port, FORWARDING["x-forwarded"][0]) == ("127.0.0.1", "http")
