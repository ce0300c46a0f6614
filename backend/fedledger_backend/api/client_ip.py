"""Who sent a request: the socket peer, or the client a trusted reverse proxy names.

A proxy header (``X-Forwarded-For``, or RFC 7239 ``Forwarded``) is text the sender writes, so it
is believed only from the proxies the operator names (``--trusted-proxy``,
``FEDLEDGER_TRUSTED_PROXIES``); from any other peer it is ignored and the peer is the client.
From a trusted peer the header's hops are read right to left: each trusted proxy appended the
address it saw, so the first hop that is not a trusted proxy is the client, and whatever the
client wrote to the left of it is never read.  A hop that does not parse stops the walk at the
proxy that forwarded it.  Only the one header the proxies set is read (``proxy_header``): a
client cannot add the other kind to choose its own address.

uvicorn rewrites the peer from ``X-Forwarded-For`` itself when its ``proxy_headers`` option is
on (its default, trusting 127.0.0.1); ``fedledger serve`` and :class:`fedledger_backend.api.server.
BackgroundServer` turn it off, so that this module is the only place a header is believed.

Rate limits key IPv6 clients by their /64 (:func:`rate_key`): one host usually holds a whole
/64 and could otherwise take a fresh bucket per address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ProxyHeader = Literal["x-forwarded-for", "forwarded"]
MAX_HOPS = 32
"""Hops read from a proxy header, from the right; a longer chain stops at the last trusted one."""


def parse_ip(text: str) -> IPAddress | None:
    """An address as a proxy header or the socket gives it (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _forwarded_for(value: str) -> str:
    """The address of an RFC 7239 ``for=`` value: unquoted, without brackets and port."""
    v = value.strip().strip('"')
    if v.startswith("["):
        return v[1 : v.find("]")] if "]" in v else ""
    if v.count(":") == 1:  # IPv4 with a port
        return v.split(":", 1)[0]
    return v


def header_hops(values: Sequence[str], header: ProxyHeader) -> list[IPAddress | None]:
    """The hops a proxy header lists, left to right (None for one that does not parse)."""
    joined = ",".join(values)
    if header == "x-forwarded-for":
        return [parse_ip(h) for h in joined.split(",") if h.strip()]
    hops: list[IPAddress | None] = []
    for element in joined.split(","):
        if not element.strip():
            continue
        found: IPAddress | None = None
        for pair in element.split(";"):
            name, _, value = pair.partition("=")
            if name.strip().lower() == "for":
                found = parse_ip(_forwarded_for(value))
        hops.append(found)
    return hops


def client_ip(
    peer: str | None,
    header_values: Sequence[str],
    trusted: Sequence[IPNetwork],
    header: ProxyHeader = "x-forwarded-for",
) -> str:
    """The client of a request from socket peer ``peer`` carrying ``header_values`` of the
    proxy header (see the module docstring); ``"unknown"`` without a peer."""
    if not peer:
        return "unknown"
    current = parse_ip(peer)
    if current is None:
        return peer  # not an IP socket (a Unix socket path): one client
    if not _trusted(current, trusted) or not header_values:
        return str(current)
    for hop in reversed(header_hops(header_values, header)[-MAX_HOPS:]):
        if hop is None:
            break
        if not _trusted(hop, trusted):
            return str(hop)
        current = hop
    return str(current)


def _trusted(ip: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in trusted)


def rate_key(client: str) -> str:
    """The rate-limit key of a client address: the address, or the /64 of an IPv6 one."""
    ip = parse_ip(client)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return client
