"""`metahub login --mirror`: the node files that send pulls of a registry through MetaHub.

For each mirrored registry two files, each a whole file of its own, so a re-run rewrites them
and leaves every other file alone:

- containerd: `<hosts dir>/<registry>/hosts.toml` (containerd's docs/hosts.md) naming MetaHub as
  a pull/resolve host before the registry itself, with the login as a static `Authorization:
  Basic` header, which containerd sends with every request to that host (it adds `?ns=<registry>`,
  so MetaHub knows which registry is meant);
- podman and CRI-O: a `registries.conf.d` drop-in (containers-registries.conf(5)) with a mirror
  `location = "<metahub>/<prefix>"`, MetaHub's path prefix for that registry; the login goes into
  auth.json keyed by that same location.

Every file is 0600 (it holds a password or is next to one), replaced atomically, and not
touched at all when it already says the same: running the login twice changes nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from metahub.client.urls import base_url
from metahub.host.authfiles import encode_auth, write_private
from metahub.host.errors import HostError
from metahub.images.spec import registry_host

DEFAULT_CONTAINERD_HOSTS_DIR = Path("/etc/containerd/certs.d")
DEFAULT_REGISTRIES_CONF_DIR = Path("/etc/containers/registries.conf.d")
HEADER = "# Written by `metahub login --mirror`; a re-run replaces this file.\n"
# A registry as image references spell it: host[:port], lower case.
_REGISTRY_RE = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?\Z")
# A path prefix: one component of a repository name (the distribution spec's grammar).
_PREFIX_RE = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*\Z")


class MirrorError(HostError):
    """A `--mirror` that cannot be written; the message names it."""


@dataclass(frozen=True, slots=True)
class Mirror:
    registry: str  # as image references spell it: docker.io, ghcr.io, registry.lab:5000
    prefix: str  # MetaHub's path prefix for it (prefix-mode mirrors: podman, CRI-O)

    @property
    def server(self) -> str:
        """The registry's own API root: containerd's `server`, used when MetaHub cannot help."""
        return base_url(self.registry)


def parse_mirror(text: str) -> Mirror:
    """`docker.io`, `ghcr.io`, `registry.lab:5000=lab` -> the registry and its MetaHub prefix.

    The prefix is the registry's name unless `=PREFIX` says otherwise; a name with a port is no
    path component, so it needs one.
    """
    raw, sep, prefix = text.strip().partition("=")
    registry = raw.lower()
    if not _REGISTRY_RE.match(registry):
        raise MirrorError(
            f"--mirror {text!r}: expected a registry as image references name it, "
            "e.g. docker.io, ghcr.io or registry.lab:5000=lab"
        )
    registry = registry_host(registry)  # Docker Hub's other names are docker.io
    if not sep:
        prefix = registry
    if not _PREFIX_RE.match(prefix):
        raise MirrorError(
            f"--mirror {text!r}: {prefix!r} is not a path component MetaHub can route by; "
            f"give the prefix MetaHub's config names for it: --mirror {registry}=PREFIX"
        )
    return Mirror(registry, prefix)


def mirror_location(server_key: str, mirror: Mirror) -> str:
    """Where podman and CRI-O find the registry on MetaHub, and their auth.json key for it."""
    return f"{server_key}/{mirror.prefix}"


def _quoted(text: str) -> str:
    """A TOML basic string (JSON's escaping is TOML's for these characters)."""
    return json.dumps(text)


def hosts_toml(mirror: Mirror, metahub_url: str, login: str, password: str) -> str:
    host = _quoted(metahub_url)
    authorization = _quoted(f"Basic {encode_auth(login, password)}")
    return (
        f"{HEADER}"
        f"server = {_quoted(mirror.server)}\n"
        "\n"
        f"[host.{host}]\n"
        '  capabilities = ["pull", "resolve"]\n'
        f"  [host.{host}.header]\n"
        f"    Authorization = [{authorization}]\n"
    )


def registries_conf(mirror: Mirror, server_key: str, *, insecure: bool) -> str:
    lines = [
        HEADER.rstrip("\n"),
        "[[registry]]",
        f"prefix = {_quoted(mirror.registry)}",
        f"location = {_quoted(mirror.registry)}",
        "",
        "[[registry.mirror]]",
        f"location = {_quoted(mirror_location(server_key, mirror))}",
    ]
    if insecure:
        lines.append("insecure = true")
    return "\n".join(lines) + "\n"


def drop_in_name(mirror: Mirror) -> str:
    return f"50-metahub-{mirror.registry.replace(':', '-')}.conf"


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    changed: bool


def write_mirror_files(
    mirror: Mirror,
    *,
    metahub_url: str,
    server_key: str,
    login: str,
    password: str,
    containerd_hosts_dir: Path,
    registries_conf_dir: Path,
) -> list[Written]:
    """Write containerd's hosts.toml and the registries.conf drop-in for one registry."""
    hosts = containerd_hosts_dir / mirror.registry / "hosts.toml"
    drop_in = registries_conf_dir / drop_in_name(mirror)
    insecure = metahub_url.startswith("http://")
    return [
        Written(hosts, write_private(hosts, hosts_toml(mirror, metahub_url, login, password))),
        Written(
            drop_in, write_private(drop_in, registries_conf(mirror, server_key, insecure=insecure))
        ),
    ]
