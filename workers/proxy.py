"""Which peers may tell us who the client is (``--forwarded-allow-ips``), and how we listen.

A proxy in front of prefork (nginx, a load balancer) connects from its own address; the
client's address and scheme arrive in ``Forwarded`` (RFC 7239) or ``X-Forwarded-For`` /
``X-Forwarded-Proto`` / ``X-Forwarded-Ssl: on`` / ``X-Forwarded-Protocol: ssl`` (the last
three are gunicorn's default ``secure_scheme_headers``). Anyone can send those headers, so they count only
when the *peer* is trusted. Whether the peer is trusted is decided once per connection, at
accept, so the per-request cost for an untrusted peer is nothing.

Unix-socket peers are always trusted: only processes with access to the socket file (the
proxy on the same host) can connect, which is gunicorn's behaviour too.

The client is found by walking the list of hops from the right, skipping trusted proxies: the
first address that is not one is the client (nginx's ``real_ip_recursive``). The leftmost
entries are whatever the client chose to send and must not be believed. The scheme is the one
recorded for that same hop — the ``proto`` of its ``Forwarded`` element, or the matching entry
of ``X-Forwarded-Proto`` when that lists one scheme per hop — else the rightmost one given.
A hop that is no IP address (RFC 7239's ``unknown`` or an obfuscated ``_name``) leaves
REMOTE_ADDR as it was: an application expects an address there.
"""

from __future__ import annotations

import ipaddress
from typing import Any

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_SCHEMES = frozenset(("http", "https"))


def _ip(text: str) -> _Address | None:
    """The address in ``text`` (IPv4-mapped IPv6 as IPv4, zone index dropped), else None."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ForwardedTrust:
    """Parsed ``--forwarded-allow-ips``: addresses, CIDR networks, or ``*``."""

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.allow_all = "*" in items
        self.networks: list[_Network] = [
            ipaddress.ip_network(item, strict=False) for item in items if item != "*"]

    def trusts(self, addr: str) -> bool:
        """True for a trusted proxy address; ``""`` (a unix-socket peer) is trusted."""
        if self.allow_all or not addr:
            return True
        ip = _ip(addr)
        return ip is not None and any(ip in net for net in self.networks)

    def apply(self, environ: dict[str, Any]) -> None:
        """Rewrite REMOTE_ADDR and wsgi.url_scheme from a trusted peer's forwarding headers
        (``Forwarded`` when present, else the X-Forwarded-* family)."""
        forwarded = environ.get("HTTP_FORWARDED")
        if forwarded is not None:
            fors, protos = _parse_forwarded(forwarded)
        else:
            xff = environ.get("HTTP_X_FORWARDED_FOR")
            fors = [_strip_port(part.strip()) for part in xff.split(",")] if xff else []
            proto = environ.get("HTTP_X_FORWARDED_PROTO")
            protos = [part.strip() for part in proto.split(",")] if proto else []
            if not protos and (environ.get("HTTP_X_FORWARDED_SSL", "").lower() == "on"
                               or environ.get("HTTP_X_FORWARDED_PROTOCOL", "").lower() == "ssl"):
                protos = ["https"]
        client = -1
        if fors:
            client = self._client(fors)
            if _ip(fors[client]) is not None:
                environ["REMOTE_ADDR"] = fors[client]
        if protos:
            scheme = protos[client] if len(protos) == len(fors) else ""
            if not scheme:
                scheme = next((proto for proto in reversed(protos) if proto), "")
            scheme = scheme.lower()
            if scheme in _SCHEMES:
                environ["wsgi.url_scheme"] = scheme

    def _client(self, hops: list[str]) -> int:
        """Index of the client: the rightmost hop that is not a trusted proxy, else the first."""
        for index in range(len(hops) - 1, -1, -1):
            hop = hops[index]
            if hop and not self.trusts(hop):
                return index
        return 0


def _parse_forwarded(value: str) -> tuple[list[str], list[str]]:
    """``for`` and ``proto`` of each element of a ``Forwarded`` header (RFC 7239 §4), one
    entry per element ("" when absent), addresses unbracketed and without port."""
    fors: list[str] = []
    protos: list[str] = []
    for element in value.split(","):
        node = proto = ""
        for pair in element.split(";"):
            name, sep, val = pair.partition("=")
            if not sep:
                continue
            name = name.strip().lower()
            val = val.strip().strip('"')
            if name == "for":
                node = _strip_port(val)
            elif name == "proto":
                proto = val
        fors.append(node)
        protos.append(proto)
    if not any(protos):
        protos = []
    return fors, protos


def _strip_port(node: str) -> str:
    """``[2001:db8::1]:4711`` -> ``2001:db8::1``; ``192.0.2.1:80`` -> ``192.0.2.1``; a bare
    IPv6 address (several colons) stays as it is."""
    if node.startswith("["):
        return node[1:node.find("]")] if "]" in node else node
    if node.count(":") == 1:
        return node.split(":", 1)[0]
    return node
