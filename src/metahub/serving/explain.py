"""Explanations of selection as plain data: for the API, the CLI table and the logs."""

from __future__ import annotations

from typing import Any

from metahub.features.selection import MachineProfile, Verdict
from metahub.serving.manifests import Filtering
from metahub.upstream.routing import Route


def profile_json(profile: MachineProfile) -> dict[str, Any]:
    return {
        "name": profile.name,
        "features": [str(f) for f in profile.features],
        "mode": profile.mode,
        "platforms": [str(p) for p in profile.platforms],
    }


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    entry = verdict.entry
    return {
        "position": entry.position,
        "digest": entry.digest,
        "media_type": entry.media_type,
        "platform": str(entry.platform) if entry.platform is not None else None,
        "features": list(entry.features),
        "fits": verdict.fits,
        "score": {"satisfied": verdict.satisfied, "distance": round(verdict.distance, 6)},
        "chosen": verdict.chosen,
        "served_platform": (
            str(verdict.served_platform) if verdict.served_platform is not None else None
        ),
        "rules": list(verdict.rules),
        "why_not": list(verdict.reasons),
    }


def filtering_json(filtering: Filtering) -> dict[str, Any]:
    served = filtering.served
    return {
        "upstream": {
            "digest": filtering.upstream.digest,
            "media_type": filtering.upstream.media_type,
        },
        "filtered": filtering.filtered,
        "served_digest": served.digest if served is not None else None,
        "error": filtering.error,
        "entries": [verdict_json(v) for v in filtering.verdicts],
        "nested": {str(pos): filtering_json(n) for pos, n in sorted(filtering.nested.items())},
    }


def explanation_json(
    image: str, route: Route, profile: MachineProfile, filtering: Filtering
) -> dict[str, Any]:
    return {
        "image": image,
        "registry": route.registry,
        "repository": route.repository,
        "machine_type": profile_json(profile),
        **filtering_json(filtering),
    }
