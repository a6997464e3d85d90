"""Per-repository access: may a machine type (or profile login) pull `registry/repository`?

One check for every surface: the `/v2/` routes refuse a repository outside the profile's
patterns and `/token` leaves it out of the grant. The refusal names the repository and the
machine type asking, never the patterns of any type, so it tells nothing about other types.
"""

from __future__ import annotations

from metahub import errors
from metahub.features.selection import MachineProfile


def may_pull(profile: MachineProfile | None, registry: str, repository: str) -> bool:
    """None is an anonymous client served unfiltered: `anonymous.unfiltered` opens everything."""
    return profile is None or profile.repositories.allows(registry, repository)


def check_repository_access(profile: MachineProfile | None, registry: str, repository: str) -> None:
    """Raises `403 DENIED` when the profile's patterns leave this repository out."""
    if may_pull(profile, registry, repository):
        return
    assert profile is not None
    name = f"{registry}/{repository}"
    raise errors.Denied(
        f"machine type {profile.name!r} may not pull {name}",
        detail={"repository": name, "machine_type": profile.name},
    )
