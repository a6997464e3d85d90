"""Coverage: for each image and machine type, what a pull gets, and which builds would help.

Each cell is an explanation (`ManifestService.explain`, the selection a pull runs, storing
nothing) reduced to its outcome (serving/outcomes.py) and the entries a pull would run. The
suggestion reads the `cpu` features of the machine types that only get a generic build and
finds the fewest microarchitectures (archspec names, from those types' own CPUs) whose builds
the selection would give them, judged by the same matchers a pull uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from metahub.auth.profiles import MachineProfiles
from metahub.features.model import Feature
from metahub.features.selection import MachineProfile, Matchers
from metahub.oci.reference import parse_image
from metahub.serving.manifests import Filtering, ManifestService
from metahub.serving.outcomes import Outcome, chosen_entries, outcome_of
from metahub.upstream.routing import Router

CPU_KEY = "cpu"


def profiles_named(profiles: MachineProfiles, names: Sequence[str]) -> list[MachineProfile]:
    """The named machine types (or profile logins), or every machine type when none is named;
    an unknown name is a 404 before any work starts."""
    return [profiles.named(name) for name in (names or profiles.names())]


async def coverage_of(
    manifests: ManifestService,
    profiles: MachineProfiles,
    images: Sequence[str],
    names: Sequence[str] = (),
    router: Router | None = None,
) -> dict[str, Any]:
    """Coverage of each image for the machine types: what the CLI, the API and the UI show.

    With a `router`, an image names its registry as a pull through a path prefix does
    (`ghcr.io/acme/app:1.0`; no registry: the default upstream).
    """
    parsed = [  # all checked before any work
        (image, *routed_image(image, router)) for image in images
    ]
    chosen = profiles_named(profiles, names)
    rows = [
        await image_coverage(manifests, image, name, reference, chosen)
        for image, name, reference in parsed
    ]
    return {"images": rows}


@dataclass(frozen=True, slots=True)
class Cell:
    profile: MachineProfile
    filtering: Filtering
    outcome: Outcome


async def image_coverage(
    manifests: ManifestService,
    image: str,
    name: str,
    reference: str,
    profiles: Sequence[MachineProfile],
) -> dict[str, Any]:
    """One image's row: its upstream digest, each machine type's outcome and entries, and the
    builds that would turn its generic types into matched ones."""
    cells = []
    for profile in profiles:
        filtering = await manifests.explain(name, reference, profile)
        cells.append(Cell(profile, filtering, outcome_of(filtering)))
    generic = [cell.profile for cell in cells if cell.outcome == "generic"]
    digest = cells[0].filtering.upstream.digest if cells else None
    if digest is None:  # no machine type to ask for: the image's digest all the same
        digest = (await manifests.upstream.get_manifest(name, reference)).digest
    return {
        "image": image,
        "digest": digest,
        "machine_types": [cell_json(cell) for cell in cells],
        "suggested_builds": suggested_builds(generic, manifests.matchers),
    }


def cell_json(cell: Cell) -> dict[str, Any]:
    served = cell.filtering.served
    return {
        "machine_type": cell.profile.name,
        "outcome": cell.outcome,
        "served_digest": served.digest if served is not None else None,
        "entries": entries_json(cell.filtering),
    }


def entries_json(filtering: Filtering) -> list[dict[str, Any]]:
    return [
        {
            "platform": str(entry.platform) if entry.platform is not None else None,
            "features": list(entry.features),
            "digest": entry.digest,
        }
        for entry, _ in chosen_entries(filtering)
    ]


def suggested_builds(generic: Sequence[MachineProfile], matchers: Matchers) -> dict[str, Any]:
    """The fewest `cpu:<target>` builds that would give every generic type a matched build.

    Candidates are the generic types' own microarchitectures (aliases resolved to archspec
    names); a candidate covers a type when the cpu matcher lets that type run it, so a build for
    an ancestor in the lineage covers its descendants. Greedy: the candidate covering most
    uncovered types first, then the more derived one (a closer fit), then by name.
    """
    matcher = matchers.for_key(CPU_KEY)
    candidates: set[str] = set()
    without_cpu: list[str] = []
    for profile in generic:
        values = profile.by_key.get(CPU_KEY, ())
        if not values:
            without_cpu.append(profile.name)
        candidates.update(matcher.canonical(value) for value in values)
    covers = {
        target: {p.name for p in generic if matchers.fit(Feature(CPU_KEY, target), p.by_key).ok}
        for target in candidates
    }
    uncovered = {p.name for p in generic if p.name not in without_cpu}
    targets = []
    while uncovered:
        best = max(
            sorted(covers), key=lambda t: _worth(t, covers[t] & uncovered, generic, matchers)
        )
        gained = covers[best] & uncovered
        if not gained:
            break
        feature = f"{CPU_KEY}:{best}"
        targets.append({"target": best, "feature": feature, "machine_types": sorted(gained)})
        uncovered -= gained
    return {
        "targets": targets,
        "unreachable": sorted(uncovered) + sorted(without_cpu),
    }


def _worth(
    target: str, gains: set[str], profiles: Sequence[MachineProfile], matchers: Matchers
) -> tuple[int, float]:
    """More types gained first; then the build closest to them (distance 0: built for them)."""
    feature = Feature(CPU_KEY, target)
    distance = sum(matchers.fit(feature, p.by_key).distance for p in profiles if p.name in gains)
    return len(gains), -distance


def suggestion_text(suggested: dict[str, Any]) -> str:
    """One sentence: which cpu builds would turn the generic machine types into matched ones."""
    targets = suggested["targets"]
    parts = []
    if targets:
        builds = "; ".join(f"{t['feature']} for {', '.join(t['machine_types'])}" for t in targets)
        parts.append(f"builds that would match the generic machine types: {builds}")
    if suggested["unreachable"]:
        parts.append(f"no cpu build reaches {', '.join(suggested['unreachable'])}")
    return "; ".join(parts) or "no machine type falls back to the generic build"


def routed_image(image: str, router: Router | None) -> tuple[str, str]:
    """(the key caches and upstreams know the repository by, the reference) of an image."""
    name, reference = parse_image(image)
    return (router.route(name).key if router is not None else name), reference
