"""Which registry and repository a request names: the one place a name is resolved.

With the single `upstream:` of the config, every name is a repository of that upstream, whose
registry is named as image references spell it: the URL's `host[:port]` (`docker.io` for Docker
Hub), or `local` for an OCI layout. Access patterns (`auth/access.py`) are matched against the
pair this returns.
"""

from __future__ import annotations

import functools

from metahub.config import Settings
from metahub.hub import Hub
from metahub.images.spec import DOCKER_HUB, registry_host

LOCAL_REGISTRY = "local"


def upstream_registry(settings: Settings) -> str:
    """The registry name of the configured upstream."""
    return _registry_name(settings.upstream.url)


@functools.cache
def _registry_name(url: str | None) -> str:
    """Worked out once per URL: every request asks."""
    return registry_host(url) if url is not None else LOCAL_REGISTRY


def resolve_repository(hub: Hub, name: str) -> tuple[str, str]:
    """(registry, repository) for a repository name as a client sent it.

    Docker Hub's official images live under `library/`: `alpine` is `docker.io/library/alpine`,
    so one pattern covers both spellings.
    """
    registry = upstream_registry(hub.settings)
    if registry == DOCKER_HUB and "/" not in name:
        name = f"library/{name}"
    return registry, name
