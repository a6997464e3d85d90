"""Building the index a spec describes: deterministic bytes that keep `platform.features`.

The same resolved entries always give the same bytes (orjson, fixed key order, annotations
sorted), so pushing a spec twice, or serving a virtual image twice, gives one digest. Entries
may differ only in `features`: that is what a feature-tagged index is for. Entries that do not
differ at all are refused, since the later one could never be chosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson

from metahub.images.errors import ImageError
from metahub.images.members import Resolved, member_label
from metahub.images.spec import ImageSpec
from metahub.oci import mediatypes
from metahub.oci.digest import Digest

IndexType = Literal["oci", "docker"]
INDEX_MEDIA_TYPES: dict[IndexType, str] = {
    "oci": mediatypes.OCI_INDEX,
    "docker": mediatypes.DOCKER_MANIFEST_LIST,
}


class IndexBuildError(ImageError, ValueError):
    """Entries that cannot make one index; the message names the members."""


@dataclass(frozen=True, slots=True)
class BuiltIndex:
    data: bytes
    media_type: str
    digest: str

    @property
    def size(self) -> int:
        return len(self.data)


def build_index(
    spec: ImageSpec, entries: Sequence[Resolved], index_type: IndexType = "oci"
) -> BuiltIndex:
    _check_unique(spec, entries)
    media_type = INDEX_MEDIA_TYPES[index_type]
    if index_type == "docker" and spec.annotations:
        raise IndexBuildError(
            "annotations: a Docker manifest list has no annotations; use the OCI type or drop them"
        )
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [entry.descriptor for entry in entries],
    }
    if spec.annotations:
        document["annotations"] = dict(sorted(spec.annotations.items()))
    data = orjson.dumps(document)
    return BuiltIndex(data, media_type, str(Digest.of(data)))


def _check_unique(spec: ImageSpec, entries: Sequence[Resolved]) -> None:
    seen: dict[tuple[object, ...], Resolved] = {}
    for entry in entries:
        platform = entry.descriptor.get("platform")
        if entry.is_attestation or not isinstance(platform, Mapping):
            continue
        key = (
            platform.get("os"),
            platform.get("architecture"),
            platform.get("variant") or "",
            platform.get("os.version") or "",
            tuple(sorted(platform.get("os.features") or ())),
            tuple(sorted(platform.get("features") or ())),
        )
        earlier = seen.get(key)
        if earlier is not None:
            raise IndexBuildError(
                f"{member_label(spec, entry.member)} has the same platform and features as "
                f"{member_label(spec, earlier.member)} ({_describe(platform)}); "
                "entries must differ at least in features"
            )
        seen[key] = entry


def _describe(platform: Mapping[str, object]) -> str:
    text = f"{platform.get('os')}/{platform.get('architecture')}"
    if platform.get("variant"):
        text += f"/{platform['variant']}"
    features = platform.get("features")
    return f"{text} {','.join(features) if isinstance(features, list) else ''}".strip()
