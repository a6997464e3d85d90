"""Registry names as image references spell them: `docker.io`, `ghcr.io`, `registry.lab:5000`.

A reference's first component names its registry when it holds a `.` or a `:` or is
`localhost`; Docker Hub goes by several host names, all of them `docker.io` here, and there a
one-component repository means `library/<name>`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

# A host name or IPv4 address (lower case), or a bracketed IPv6 address; then an optional port.
_REGISTRY_RE = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
    r"|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?\Z"
)


def canonical_registry(name: str) -> str:
    """The registry as MetaHub names it: lower case, Docker Hub's aliases as `docker.io`."""
    name = name.lower()
    return DOCKER_HUB if name in DOCKER_HUB_ALIASES else name


def is_registry_name(name: str) -> bool:
    """Whether `name` is a host[:port] as an image reference spells a registry."""
    return bool(_REGISTRY_RE.match(name)) and len(name) <= 255


def registry_of_url(url: str) -> str:
    """`https://Registry.example.org:5000/` -> `registry.example.org:5000`; Hub -> docker.io."""
    netloc = urlsplit(url if "://" in url else f"//{url}").netloc
    return canonical_registry(netloc.rpartition("@")[2])


def repository_in(registry: str, repository: str) -> str:
    """The repository as the registry names it: Docker Hub's `busybox` is `library/busybox`."""
    if registry == DOCKER_HUB and "/" not in repository:
        return f"library/{repository}"
    return repository
