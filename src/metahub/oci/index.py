"""Reading image indexes and writing the filtered ones MetaHub serves.

Upstream bytes are never re-serialized: only a filtered index gets new bytes, built from the
parsed upstream document with entries removed, so every other field (annotations, `subject`,
`artifactType`, unknown extensions) survives in its original order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from metahub.oci.digest import Digest
from metahub.oci.json_object import NotAJsonObject, json_object
from metahub.oci.platform import PlatformKey


class InvalidIndex(ValueError):
    """Upstream bytes announced as an index that are not one."""


# Docker's attestation manifests (buildx provenance and SBOMs) are index entries annotated with
# this type and the digest of the image they describe.
REFERENCE_TYPE = "vnd.docker.reference.type"
ATTESTATION_TYPE = "attestation-manifest"
REFERENCE_DIGEST = "vnd.docker.reference.digest"


class EntryKind:
    """What selection judges an entry by: its platform, its features, whether it is an
    attestation. Equal kinds are one object (`kind_of`), so that what was made of a kind is
    found again by identity, without hashing its fields for every entry of every selection."""

    __slots__ = ("attestation", "features", "platform")

    def __init__(
        self, platform: PlatformKey | None, features: tuple[str, ...], attestation: bool
    ) -> None:
        self.platform = platform
        self.features = features
        self.attestation = attestation


# Kinds made so far. A few dozen per index repeat across indexes; past the bound it starts
# again, and a kind made anew is only a remembered judgement missed once more.
_KINDS: dict[tuple[PlatformKey | None, tuple[str, ...], bool], EntryKind] = {}
KINDS_LIMIT = 4096


def kind_of(
    platform: PlatformKey | None, features: tuple[str, ...], attestation: bool
) -> EntryKind:
    fields = (platform, features, attestation)
    kind = _KINDS.get(fields)
    if kind is None:
        if len(_KINDS) >= KINDS_LIMIT:
            _KINDS.clear()
        kind = _KINDS[fields] = EntryKind(platform, features, attestation)
    return kind


@dataclass(frozen=True, slots=True)
class Entry:
    """One descriptor of an index, with what selection needs from it."""

    position: int
    descriptor: dict[str, Any]
    platform: PlatformKey | None
    features: tuple[str, ...]
    # Whether it is an attestation: read once here, asked of every entry on every selection.
    attestation: bool = False
    # Made when selection first asks (`kind`); not copied by `dataclasses.replace`, so an entry
    # served under another platform is of that platform's kind.
    _kind: EntryKind | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def kind(self) -> EntryKind:
        kind = self._kind
        if kind is None:
            kind = kind_of(self.platform, self.features, self.attestation)
            object.__setattr__(self, "_kind", kind)
        return kind

    @property
    def digest(self) -> str:
        return str(self.descriptor.get("digest", ""))

    @property
    def media_type(self) -> str:
        return str(self.descriptor.get("mediaType", ""))

    @property
    def annotations(self) -> dict[str, str]:
        """The annotations with string values: upstream JSON may hold anything there."""
        value = self.descriptor.get("annotations")
        if not isinstance(value, dict):
            return {}
        return {key: text for key, text in value.items() if isinstance(text, str)}


@dataclass(frozen=True, slots=True)
class Index:
    document: dict[str, Any]
    entries: tuple[Entry, ...]

    @property
    def media_type(self) -> str:
        return str(self.document.get("mediaType", ""))

    @classmethod
    def parse(cls, data: bytes, document: dict[str, Any] | None = None) -> Index:
        """The index `data` holds; `document`, when given, is that JSON object already read
        (by the upstream client, which checks every manifest is one), so it is not read again.
        """
        if document is None:
            try:
                document = json_object(data)
            except NotAJsonObject as exc:
                raise InvalidIndex(f"index {exc}") from exc
        manifests = document.get("manifests")
        if not isinstance(manifests, list):
            raise InvalidIndex("index has no 'manifests' list")
        entries = []
        # An index repeats a few platforms and feature sets over many entries: each key is
        # made, and each feature set checked, once.
        platforms: dict[tuple[object, ...], PlatformKey] = {}
        feature_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
        for position, descriptor in enumerate(manifests):
            if not isinstance(descriptor, dict):
                raise InvalidIndex(f"index entry {position} is not an object")
            entries.append(_entry(position, descriptor, platforms, feature_sets))
        return cls(document, tuple(entries))

    def has_features(self) -> bool:
        return any(entry.features for entry in self.entries)

    def with_entries(self, kept: Sequence[Entry]) -> bytes:
        """Serialize this index keeping only `kept` (in index order); deterministic bytes.

        Raises InvalidIndex for a document orjson reads but cannot write back (JSON nested
        deeper than its writer allows). Checked here, where new bytes are made, rather than on
        every parse: most indexes parsed are never rewritten, and the check cost a full
        serialisation of each.
        """
        document = dict(self.document)
        document["manifests"] = [e.descriptor for e in sorted(kept, key=lambda e: e.position)]
        try:
            return orjson.dumps(document)
        except orjson.JSONEncodeError as exc:
            raise InvalidIndex(f"index nests its JSON too deeply to be rewritten: {exc}") from exc


def _entry(
    position: int,
    descriptor: dict[str, Any],
    platforms: dict[tuple[object, ...], PlatformKey],
    feature_sets: dict[tuple[str, ...], tuple[str, ...]],
) -> Entry:
    annotations = descriptor.get("annotations")
    attestation = (
        isinstance(annotations, dict) and annotations.get(REFERENCE_TYPE) == ATTESTATION_TYPE
    )
    platform = descriptor.get("platform")
    if not isinstance(platform, dict):
        return Entry(position, descriptor, None, (), attestation)
    features = _features(position, platform.get("features"), feature_sets)
    fields = (
        platform.get("os", ""),
        platform.get("architecture", ""),
        platform.get("variant", ""),
        platform.get("os.version", ""),
    )
    # Only strings are remembered: 1, 1.0 and True are one dict key but three platforms.
    plain = (
        type(fields[0]) is str
        and type(fields[1]) is str
        and type(fields[2]) is str
        and type(fields[3]) is str
    )
    key = platforms.get(fields) if plain else None
    if key is None:
        key = PlatformKey(
            os=str(fields[0]),
            architecture=str(fields[1]),
            variant=str(fields[2] or ""),
            os_version=str(fields[3] or ""),
        )
        if plain:
            platforms[fields] = key
    return Entry(position, descriptor, key, features, attestation)


def _features(
    position: int, features: object, known: dict[tuple[str, ...], tuple[str, ...]]
) -> tuple[str, ...]:
    """An entry's `platform.features` as a tuple of strings; the same tuple for every entry that
    lists the same ones (`known`: those of this index, checked once)."""
    if features is None:
        return ()
    if isinstance(features, list):
        listed = tuple(features)
        try:
            checked = known.get(listed)
        except TypeError:  # an object or a list among them: not strings, refused below
            checked = None
        if checked is not None:  # only tuples of strings are kept, and equal only to such
            return checked
        if all(isinstance(feature, str) for feature in listed):
            known[listed] = listed
            return listed
    raise InvalidIndex(f"index entry {position} has a 'platform.features' that is not a list")


def digest_of(data: bytes) -> str:
    return str(Digest.of(data))
