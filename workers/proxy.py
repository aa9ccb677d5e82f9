"""Which peers may tell us who the client is (``--forwarded-allow-ips``), and how we listen.

A proxy in front of prefork (nginx, a load balancer) connects from its own address; the
client's address and scheme arrive in ``Forwarded`` (RFC 7239) or ``X-Forwarded-For`` /
``X-Forwarded-Proto`` / ``X-Forwarded-Ssl``. Anyone can send those headers, so they count only
when the *peer* is trusted. Whether the peer is trusted is decided once per connection, at
accept, so the per-request cost for an untrusted peer is nothing.

Unix-socket peers are always trusted: only processes with access to the socket file (the
proxy on the same host) can connect, which is gunicorn's behaviour too.

``X-Forwarded-For`` is walked from the right, skipping trusted proxies, and the first address
that is not one is the client (nginx's ``real_ip_recursive``): the leftmost entries are
whatever the client chose to send and must not be believed.
"""

from __future__ import annotations

import ipaddress
from typing import Any

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def apply(self, environ: dict[str, Any]) -> None:
        """Rewrite REMOTE_ADDR and wsgi.url_scheme from a trusted peer's forwarding headers."""
        forwarded = environ.get("HTTP_FORWARDED")
        if forwarded is not None:
            fors, protos = _parse_forwarded(forwarded)
        else:
            xff = environ.get("HTTP_X_FORWARDED_FOR")
            fors = [part.strip() for part in xff.split(",")] if xff else []
            proto = environ.get("HTTP_X_FORWARDED_PROTO")
            protos = [part.strip() for part in proto.split(",")] if proto else []
            if not protos and environ.get("HTTP_X_FORWARDED_SSL", "").lower() == "on":
                protos = ["https"]
        if fors:
            environ["REMOTE_ADDR"] = self._client(fors)
        if protos:
            scheme = protos[-1].lower()
            if scheme in ("http", "https"):
                environ["wsgi.url_scheme"] = scheme

    def _client(self, hops: list[str]) -> str:
        for hop in reversed(hops):
            if hop and not self.trusts(hop):
                return hop
        return hops[0]


def _parse_forwarded(value: str) -> tuple[list[str], list[str]]:
    """``for``/``proto`` of each element of a ``Forwarded`` header (RFC 7239 §4), addresses
    unbracketed and without port."""
    fors: list[str] = []
    protos: list[str] = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, sep, val = pair.partition("=")
            if not sep:
                continue
            name = name.strip().lower()
            val = val.strip().strip('"')
            if name == "for":
                fors.append(_strip_port(val))
            elif name == "proto":
                protos.append(val)
    return fors, protos


def _strip_port(node: str) -> str:
    if node.startswith("["):
        return node[1:node.find("]")] if "]" in node else node
    if node.count(":") == 1:
        return node.split(":", 1)[0]
    return node
