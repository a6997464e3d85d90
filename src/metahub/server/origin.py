"""How a client reached this server: the scheme and host for links, the token realm and the UI.

Forwarded headers (`X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Forwarded-For`, `Forwarded`) are
believed only from a peer in `server.trusted_proxies`: from anyone else they are the client's own
words, and a spoofed host would land in the token realm clients send credentials to. A host that
is not a hostname or IP address (with an optional port) is never echoed.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from metahub.config import Settings

# The direct peer, kept in the scope when `client` is replaced by the address a proxy forwarded.
PEER_KEY = "metahub.peer"
# Matched whole (fullmatch): `$` would let a final newline through.
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_PORT = re.compile(r"[0-9]{1,5}")
_SCHEMES = ("http", "https")
Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str  # host[:port], IPv6 in brackets
    path: str = ""  # a prefix `public_url` may carry, without the final slash

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"


def origin_of(scope: Mapping[str, Any], settings: Settings) -> Origin:
    """The scheme and host the client used: `public_url` when set, else a trusted proxy's word,
    else the `Host` header, else this server's own address."""
    scheme = str(scope.get("scheme", "http"))
    if settings.public_url:
        public = urlsplit(settings.public_url)
        if public.scheme in _SCHEMES and valid_host(public.netloc):
            return Origin(public.scheme, public.netloc, public.path.rstrip("/"))
    headers = _headers(scope)
    host = headers.get("host", "")
    if is_trusted(peer_of(scope), settings.server.trusted_proxies):
        forwarded = _forwarded(headers)
        proto = (headers.get("x-forwarded-proto") or forwarded.get("proto", "")).strip().lower()
        proto = proto.split(",")[0].strip()
        if proto in _SCHEMES:
            scheme = proto
        forwarded_host = (headers.get("x-forwarded-host") or forwarded.get("host", "")).strip()
        forwarded_host = forwarded_host.split(",")[0].strip()
        if valid_host(forwarded_host):
            host = forwarded_host
    if not valid_host(host):
        host = _own_address(scope)
    return Origin(scheme if scheme in _SCHEMES else "http", host)


def valid_host(host: str) -> bool:
    """A hostname or IP address with an optional port; IPv6 in brackets."""
    if host.startswith("["):
        address, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and _valid_port(rest[1:]))):
            return False
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return False
        return True
    name, colon, port = host.partition(":")
    if colon and not _valid_port(port):
        return False
    return bool(_HOSTNAME.fullmatch(name))


def _valid_port(port: str) -> bool:
    return bool(_PORT.fullmatch(port)) and 0 < int(port) < 65536


def _own_address(scope: Mapping[str, Any]) -> str:
    server = scope.get("server") or ("127.0.0.1", 80)
    address = str(server[0])
    if ":" in address:
        address = f"[{address}]"
    host = f"{address}:{server[1]}" if server[1] is not None else address
    return host if valid_host(host) else "localhost"


def peer_of(scope: Mapping[str, Any]) -> str | None:
    """The address of the direct peer, whatever a proxy said about the client."""
    peer = scope.get(PEER_KEY)
    if peer is not None:
        return str(peer)
    client = scope.get("client")
    return str(client[0]) if client else None


def is_trusted(address: str | None, trusted: tuple[str, ...]) -> bool:
    if not trusted or address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _networks(trusted))


@functools.lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> Networks:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def behind_proxies(scope: dict[str, Any], trusted: tuple[str, ...]) -> dict[str, Any]:
    """The scope with `client` set to the address a trusted proxy forwarded (`X-Forwarded-For`,
    the nearest address that is not itself a trusted proxy); the direct peer is kept."""
    peer = peer_of(scope)
    if not is_trusted(peer, trusted):
        return scope
    headers = _headers(scope)
    chain = headers.get("x-forwarded-for")
    if chain is None:
        return scope
    client: str | None = None
    for candidate in reversed([part.strip() for part in chain.split(",")]):
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            break  # nothing further left can be believed
        client = candidate
        if not is_trusted(candidate, trusted):
            break
    if client is None:
        return scope
    port = scope["client"][1] if scope.get("client") else 0
    return {**scope, "client": (client, port), PEER_KEY: peer}


def _headers(scope: Mapping[str, Any]) -> dict[str, str]:
    wanted = ("host", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-for", "forwarded")
    found: dict[str, str] = {}
    raw: Iterable[tuple[bytes, bytes]] = scope.get("headers") or ()
    for name, value in raw:
        key = name.decode("latin-1").lower()
        if key in wanted and key not in found:
            found[key] = value.decode("latin-1")
    return found


def _forwarded(headers: dict[str, str]) -> dict[str, str]:
    """The first element of an RFC 7239 `Forwarded` header, e.g. `host=a.example;proto=https`."""
    first = headers.get("forwarded", "").split(",")[0]
    pairs: dict[str, str] = {}
    for part in first.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            pairs[key.strip().lower()] = value.strip().strip('"')
    return pairs
