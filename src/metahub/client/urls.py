"""Where a registry's API lives, and which URLs belong to it (its origin)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from yarl import URL

DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_API = "https://registry-1.docker.io"


def base_url(url: str, *, insecure: bool = False) -> str:
    """A registry's API root: HTTPS unless loopback/localhost (as docker does) or insecure."""
    if "://" not in url:
        if _is_ipv6(url):
            url = f"[{url}]"
        host = urlsplit(f"//{url}").hostname or ""
        scheme = "http" if insecure or is_loopback(host) else "https"
        url = f"{scheme}://{url}"
    parts = urlsplit(url)
    if (parts.hostname or "") in DOCKER_HUB_HOSTS:
        return DOCKER_HUB_API
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, `[::1]` or `::1`, no port) is this machine."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(hostport: str) -> str:
    """`[::1]:5000` -> `::1`, `example.org:5000` -> `example.org`: the host without its port."""
    return urlsplit(f"//{hostport}").hostname or hostport


def origin(url: str | URL) -> tuple[str, str, int | None]:
    """Scheme, host and port: what must match for a URL to belong to the same server."""
    parsed = URL(url) if isinstance(url, str) else url
    return (parsed.scheme.lower(), (parsed.host or "").lower(), parsed.port)


def same_origin(a: str | URL, b: str | URL) -> bool:
    return origin(a) == origin(b)


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False
