"""Where a registry may send us when it redirects: its own origin, or storage hosts allowed.

A registry redirects blob downloads to object storage or a CDN. Left unchecked, a redirect
makes us fetch any URL the registry names, a service on this machine or in this network
included, and serve its bytes as the blob (a `Range` request is not even checked by digest).
So a redirect is followed only to the registry's own origin or to a host matching one of the
allowed patterns, and never to a loopback, private or link-local address unless the registry
itself is on one. Names are not resolved: an address is judged when the URL spells it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from yarl import URL

from metahub.client.urls import same_origin

# Where the well-known public registries keep their blobs, from their firewall documentation:
DEFAULT_REDIRECT_HOSTS: tuple[str, ...] = (
    # Docker Hub: Cloudflare's CDN, R2 and the older S3 bucket and CloudFront distribution.
    "production.cloudflare.docker.com",
    "*.r2.cloudflarestorage.com",
    "*.cloudfront.net",
    # ghcr.io: GitHub's package storage.
    "pkg-containers.githubusercontent.com",
    # quay.io and registry.redhat.io: Quay's CDN.
    "cdn.quay.io",
    "cdn0?.quay.io",
    # gcr.io, Artifact Registry (and registry.k8s.io, which redirects to it or to S3).
    "storage.googleapis.com",
    "*.storage.googleapis.com",
    "*.pkg.dev",
    # ECR and other registries on S3: the layer buckets, path- and virtual-host-style,
    # regional, legacy dash-regional and dual-stack endpoints.
    "s3.amazonaws.com",
    "*.s3.amazonaws.com",
    "s3.*.amazonaws.com",
    "*.s3.*.amazonaws.com",
    "*.s3-*.amazonaws.com",
    # Azure Container Registry and the Microsoft Container Registry.
    "*.blob.core.windows.net",
    "*.data.azurecr.io",
    "*.data.mcr.microsoft.com",
)


@dataclass(frozen=True, slots=True)
class RedirectPolicy:
    """`hosts`: shell-style patterns matched against a target's host, or its `host:port`."""

    hosts: tuple[str, ...] = DEFAULT_REDIRECT_HOSTS

    @classmethod
    def of(cls, hosts: Iterable[str] | None) -> RedirectPolicy:
        return cls() if hosts is None else cls(tuple(hosts))

    def allows(self, registry: str | URL, target: str | URL) -> bool:
        target = URL(target) if isinstance(target, str) else target
        if same_origin(target, registry):
            return True
        if target.scheme not in ("http", "https") or not target.host:
            return False
        host = target.host.lower().strip("[]")
        if URL(str(registry)).scheme == "https" and target.scheme != "https":
            return False  # what came over HTTPS does not go on over plain HTTP
        if is_internal(host) and not is_internal((URL(str(registry)).host or "").strip("[]")):
            return False
        hostport = f"[{host}]:{target.port}" if ":" in host else f"{host}:{target.port}"
        return any(
            fnmatchcase(host, pattern.lower()) or fnmatchcase(hostport, pattern.lower())
            for pattern in self.hosts
        )


def is_internal(host: str) -> bool:
    """Whether `host` names this machine or a private, link-local or otherwise special address."""
    host = host.lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global or address.is_multicast


def passable(
    policy: RedirectPolicy,
    registry: str,
    target: URL,
    secrets: Iterable[str],
) -> bool:
    """Whether a client may be sent to `target` itself instead of us fetching it for it.

    Only where we would follow the redirect ourselves, and only when the URL carries nothing of
    ours: not the registry's own origin (our credentials go there), no user or password in the
    URL, and none of `secrets` (the credentials we hold or sent) anywhere in it. A pre-signed
    URL's own signature is the storage's, made for whoever holds the URL: that is the point.
    """
    if same_origin(target, registry) or not policy.allows(registry, target):
        return False
    if target.user is not None or target.password is not None:
        return False
    spelled = (str(target), target.human_repr())
    return not any(secret and secret in text for secret in secrets for text in spelled)
