"""Which upstream a request is for, and the name everything below the server knows it by.

A request is routed, in order, by:
1. containerd's `?ns=<registry>` (the registry as the image reference spells it, port included),
   matched against each upstream's `registry`;
2. a first path component equal to an upstream's `prefix` (`/v2/ghcr.io/acme/app/...`, the
   form podman and CRI-O mirrors use);
3. the default upstream.

An `ns` naming no configured registry, or no default, is `404 NAME_UNKNOWN` at once, with no
upstream asked, so that containerd goes on to its next host.

Below the server (caches, single flight, the filtered-digest store, the upstream itself) a
repository goes by its `key`: `<registry>/<repository>`, so the same repository name on two
registries never shares anything. The single `upstream:` of older configs keeps the plain name
as its key, so what such a deployment stored stays where it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from metahub import errors
from metahub.config import ConfiguredUpstream
from metahub.oci.registries import canonical_registry, repository_in

# Routes of names without `?ns=` a Router remembers, at most.
ROUTES_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class Route:
    """A request's repository, resolved to its upstream."""

    upstream: ConfiguredUpstream
    # The registry as image references spell it: `docker.io`, `registry.lab:5000`.
    registry: str
    # The repository within that registry (`library/` added for docker.io's one-part names).
    repository: str
    # What caches, the filtered-digest store and the routing upstream know the repository by.
    key: str

    @property
    def qualified(self) -> str:
        """`registry/repository`, as access patterns and messages name it."""
        return f"{self.registry}/{self.repository}"


class Router:
    def __init__(self, upstreams: Sequence[ConfiguredUpstream]) -> None:
        self.upstreams = tuple(upstreams)
        self._by_registry = {u.registry: u for u in self.upstreams}
        self._by_prefix = {u.prefix: u for u in self.upstreams if u.prefix is not None}
        self.default = next((u for u in self.upstreams if u.default), None)
        legacy = [u for u in self.upstreams if u.legacy]
        # Only ever alone: keys without a registry cannot tell two upstreams apart.
        self._legacy = legacy[0] if legacy and len(self.upstreams) == 1 else None
        # Names routed without `?ns=` -> their route: a warm pull routes the same few names on
        # every request, and the upstreams are fixed for the router's life.
        self._routed: dict[str, Route] = {}

    @property
    def registries(self) -> list[str]:
        return [u.registry for u in self.upstreams]

    def route(self, name: str, ns: str | None = None) -> Route:
        """The route for repository path `name` (as the client sent it) and its `?ns=`."""
        if ns:
            upstream = self._by_registry.get(canonical_registry(ns))
            if upstream is None:
                shown = ns if len(ns) <= 100 else ns[:100] + "..."
                raise self._unknown(
                    name, f"ns={shown!r} names no registry this MetaHub mirrors", ns=ns
                )
            return self._route(upstream, name)
        known = self._routed.get(name)
        if known is not None:
            return known
        if len(self._routed) >= ROUTES_REMEMBERED:
            self._routed.clear()
        route = self._routed[name] = self._route_by_name(name)
        return route

    def _route_by_name(self, name: str) -> Route:
        first, slash, rest = name.partition("/")
        upstream = self._by_prefix.get(first)
        if upstream is not None:
            if not slash:
                raise self._unknown(
                    name,
                    f"{name!r} is the path prefix of registry {upstream.registry}: "
                    "name a repository after it",
                )
            return self._route(upstream, rest)
        if self.default is None:
            prefixes = ", ".join(sorted(self._by_prefix)) or "none configured"
            raise self._unknown(
                name,
                f"{name!r} has no ns, starts with no known prefix ({prefixes}), "
                "and no upstream is the default",
            )
        return self._route(self.default, name)

    def for_key(self, key: str) -> tuple[ConfiguredUpstream, str]:
        """The upstream a key belongs to and the repository to ask it for."""
        if self._legacy is not None:
            # The name as the client sent it, as before `upstreams:` (virtual images are keyed
            # so); a registry upstream on Docker Hub adds `library/` itself.
            return self._legacy, key
        registry, _, repository = key.partition("/")
        found = self._by_registry.get(registry)
        if found is None or not repository:
            # Keys are made by `route`; anything else is a name no upstream has.
            raise errors.NameUnknown(
                f"repository {key!r} is not in any configured registry",
                detail={"name": key, "registries": self.registries},
            )
        return found, repository

    def _route(self, upstream: ConfiguredUpstream, path_name: str) -> Route:
        repository = repository_in(upstream.registry, path_name)
        # The single `upstream:` keeps the unqualified name, exactly as before `upstreams:`.
        key = path_name if upstream is self._legacy else f"{upstream.registry}/{repository}"
        return Route(upstream, upstream.registry, repository, key)

    def _unknown(self, name: str, why: str, *, ns: str | None = None) -> errors.RegistryError:
        registries = self.registries
        detail: dict[str, object] = {"name": name, "registries": registries}
        if ns is not None:
            detail["ns"] = ns
        return errors.NameUnknown(
            f"{why}; this MetaHub mirrors {', '.join(registries)}", detail=detail
        )
