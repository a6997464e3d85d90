"""The data path for manifests: upstream -> selection -> filtered-digest store.

A manifest asked for by digest is served with exactly those bytes: either a filtered index this
MetaHub made (from the store) or the upstream's own document, since a client that pins a digest
verifies the bytes against it. Only a tag can resolve to a filtered index.

The caller has authenticated the request to a MachineProfile (None: unfiltered) already.
Filtering is two steps: `filtering` selects (reading the upstream, storing nothing), which is
all an explanation needs; `record` stores what it made, so a later pull by digest finds it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metahub import errors
from metahub.cache.lru import SizedLRU
from metahub.cache.singleflight import SingleFlight
from metahub.features.selection import (
    MachineProfile,
    Matchers,
    NoMatchingEntry,
    Verdict,
    chooses,
    entry_for_platform,
    select,
)
from metahub.oci import mediatypes
from metahub.oci.digest import Digest, looks_like_digest
from metahub.oci.index import Entry, Index, InvalidIndex
from metahub.oci.platform import DEFAULT_PLATFORM, PlatformKey
from metahub.serving.outcomes import Outcome, PullCounter, outcome_of
from metahub.store.digests import FilteredDigestStore, StoredManifest
from metahub.upstream.base import Manifest, Upstream
from metahub.upstream.caching import CachingUpstream

log = logging.getLogger("metahub.serving.manifests")

# Indexes of indexes are resolved this deep; deeper ones are served as the upstream has them.
MAX_NESTING = 4


@dataclass(frozen=True, slots=True)
class ServedManifest:
    data: bytes
    media_type: str
    digest: str
    stale: bool = False  # the upstream could not be asked; this is the last known answer
    outcome: Outcome = "generic"  # what selection made of it for the machine type served


@dataclass(slots=True)
class Filtering:
    """What selection made of one index, nested indexes included: served and explained."""

    upstream: Manifest
    verdicts: list[Verdict]
    served: ServedManifest | None  # None: nothing fits
    filtered: bool  # False: the index has no features and passes through untouched
    nested: dict[int, Filtering] = field(default_factory=dict)
    error: str | None = None
    kept: list[Entry] = field(default_factory=list)  # the entries `served` lists, once filtered


class NothingFits(errors.ManifestUnknown):
    """No entry of the index fits the machine type: the `none` outcome, a 404 to the client."""


class ManifestService:
    def __init__(
        self,
        upstream: Upstream,
        store: FilteredDigestStore,
        matchers: Matchers,
        *,
        filtered_cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.upstream = upstream
        self.store = store
        self.matchers = matchers
        # (repository, upstream index digest, machine type revision) -> what that type gets.
        self._filtered: SizedLRU[tuple[str, str, str], ServedManifest] = SizedLRU(
            "filtered", filtered_cache_bytes, lambda served: len(served.data) + 256
        )
        self._filtering: SingleFlight[tuple[str, str, str], ServedManifest] = SingleFlight(
            "filtered"
        )
        self.pulls = PullCounter()

    async def get(
        self,
        name: str,
        reference: str,
        profile: MachineProfile | None,
        *,
        accepts_index: bool = True,
    ) -> ServedManifest:
        """The manifest `profile` is served (None: the upstream's, unfiltered).

        A pull by tag is counted by machine type and outcome; a pull by digest is not, since a
        client resolving a tag asks for the digest it got right after (counted once).
        """
        if looks_like_digest(reference):
            return await self._by_digest(name, reference)
        try:
            served = await self.resolve(name, reference, profile)
        except NothingFits:
            self.pulls.count(profile, "none")
            raise
        self.pulls.count(profile, served.outcome)
        if not accepts_index and mediatypes.is_index(served.media_type):
            platform = profile.preferred_platform if profile else DEFAULT_PLATFORM
            return await self._single_manifest(name, reference, served, platform)
        return served

    async def resolve(
        self, name: str, reference: str, profile: MachineProfile | None
    ) -> ServedManifest:
        """What a tag gives `profile`, filtered and recorded as a pull's would be; not counted.

        Raises NothingFits when no entry fits.
        """
        manifest = await self.upstream.get_manifest(name, reference)
        if profile is None:
            return dataclasses.replace(_as_served(manifest), outcome="unfiltered")
        if mediatypes.is_index(manifest.media_type):
            return await self._filtered_for(name, reference, manifest, profile)
        return _as_served(manifest)

    def from_memory(
        self,
        name: str,
        reference: str,
        profile: MachineProfile | None,
        *,
        accepts_index: bool = True,
    ) -> ServedManifest | None:
        """What `get` would answer from memory alone, with the same cache lookups, counts and
        retention marks; None, having touched nothing, when `get` would await anything (the
        upstream, the database, a filtering) or choose a single manifest. The warm path's
        shortcut.
        """
        upstream = self.upstream
        if not isinstance(upstream, CachingUpstream):
            return None
        by_digest = looks_like_digest(reference)
        if by_digest:
            stored = self.store.remembered(name, reference)
            if stored is not None:
                if not accepts_index and mediatypes.is_index(stored.media_type):
                    return None
                self.store.mark_served((name, reference))
                return ServedManifest(stored.content, stored.media_type, reference)
            if not self.store.known_upstream(name, reference):
                return None
        manifest = upstream.fresh(name, reference)
        if manifest is None:
            return None
        index = mediatypes.is_index(manifest.media_type)
        if index and not accepts_index:
            return None  # a single manifest is chosen for this client: `get` does that
        key: tuple[str, str, str] | None = None
        if index and profile is not None and not by_digest:
            key = (name, manifest.digest, profile.revision)
            if not self._filtered.holds(key):
                return None
        # Everything is there: look it up as `get` does, so every count and order is the same.
        if upstream.cached_manifest(name, reference) is None:
            return None  # cannot happen in the same turn of the loop as `fresh`
        if by_digest:
            self.store.upstream_has(name, reference)
            return _as_served(manifest)
        if profile is None:
            served = dataclasses.replace(_as_served(manifest), outcome="unfiltered")
        elif key is not None:
            filtered = self._filtered.get(key)
            if filtered is None:
                return None  # cannot happen either: `holds` said it is there
            served = filtered
            self._note_served(name, served, manifest, profile)
        else:
            served = _as_served(manifest)
        self.pulls.count(profile, served.outcome)
        return served

    async def _filtered_for(
        self, name: str, reference: str, manifest: Manifest, profile: MachineProfile
    ) -> ServedManifest:
        key = (name, manifest.digest, profile.revision)
        served = self._filtered.get(key)
        if served is None:
            # A cold tag asked by a whole cluster at once is filtered (and stored) once.
            served = await self._filtering.do(
                key, lambda: self._filter_and_keep(key, reference, manifest, profile)
            )
        else:
            self._note_served(name, served, manifest, profile)
        return dataclasses.replace(served, stale=True) if manifest.stale else served

    def _note_served(
        self, name: str, served: ServedManifest, manifest: Manifest, profile: MachineProfile
    ) -> None:
        """A filtered index served from memory, noted for retention (nothing without it)."""
        # Unchanged indexes are the upstream's own; without retention there is nothing to note,
        # and the record is not built on every warm pull.
        if self.store.retention is not None and served.digest != manifest.digest:
            self.store.mark_served_filtered(
                served.digest,
                StoredManifest(name, served.media_type, served.data),
                machine_type=profile.name,
                upstream_digest=manifest.digest,
            )

    async def _filter_and_keep(
        self,
        key: tuple[str, str, str],
        reference: str,
        manifest: Manifest,
        profile: MachineProfile,
    ) -> ServedManifest:
        filtering = await self.filtering(key[0], reference, manifest, profile)
        if filtering.served is None:
            raise _no_match(key[0], reference, profile, filtering)
        await self.record(key[0], reference, filtering, profile)
        served = dataclasses.replace(filtering.served, outcome=outcome_of(filtering))
        self._filtered.put(key, served)
        return served

    async def explain(self, name: str, reference: str, profile: MachineProfile) -> Filtering:
        manifest = await self.upstream.get_manifest(name, reference)
        if not mediatypes.is_index(manifest.media_type):
            return Filtering(manifest, [], _as_served(manifest), filtered=False)
        return await self.filtering(name, reference, manifest, profile)

    async def filtering(
        self,
        name: str,
        reference: str,
        manifest: Manifest,
        profile: MachineProfile,
        depth: int = 0,
    ) -> Filtering:
        """Select from an index (and the indexes it holds) for a machine type; store nothing.

        Nested indexes are filtered first, so one in which nothing fits counts as an entry that
        does not fit, and its platform falls back to the next best entry as any other would.
        """
        index = self._parse(name, reference, manifest.data, manifest.document)
        nests = [e for e in index.entries if mediatypes.is_index(e.media_type)]
        if depth >= MAX_NESTING:
            nests = []
        choice = chooses(index, profile, self.matchers)
        if not choice and not nests:
            return Filtering(manifest, [], _as_served(manifest), filtered=False)
        result = Filtering(manifest, [], None, filtered=True)
        for entry in nests:
            child = await self.upstream.get_manifest(name, entry.digest)
            result.nested[entry.position] = await self.filtering(
                name, entry.digest, child, profile, depth + 1
            )
        unfit = {
            position: "nothing in this nested index fits"
            for position, nested in result.nested.items()
            if nested.served is None
        }
        try:
            selection = select(index, profile, self.matchers, unfit=unfit, choose=choice)
        except NoMatchingEntry as exc:
            result.verdicts, result.error = exc.verdicts, str(exc)
            return result
        result.verdicts = selection.verdicts if choice else []
        kept = [self._with_nested(entry, result.nested) for entry in selection.kept]
        if not choice and kept == list(index.entries):
            # Nothing was chosen here and nothing below changed: the upstream bytes stand.
            result.served, result.filtered = _as_served(manifest), False
            return result
        if not any(
            entry.platform is not None or mediatypes.is_index(entry.media_type) for entry in kept
        ):
            error = NoMatchingEntry(profile, _offered(result))
            result.error = str(error)
            return result
        try:
            data = index.with_entries(kept)
        except InvalidIndex as exc:
            raise self._invalid(name, reference, exc) from exc
        result.served = ServedManifest(data, manifest.media_type, str(Digest.of(data)))
        result.kept = kept
        return result

    async def record(
        self, name: str, reference: str, filtering: Filtering, profile: MachineProfile
    ) -> None:
        """Store every index a filtering made, nested ones before the index that lists them,
        so a pull by digest finds each; and log each, as it is about to be served."""
        for nested in filtering.nested.values():
            await self.record(name, nested.upstream.digest, nested, profile)
        served = filtering.served
        if served is None or not filtering.filtered:
            return  # nothing fits, or the upstream's own bytes: nothing was made
        upstream = filtering.upstream
        await self.store.put(
            served.digest,
            StoredManifest(name, served.media_type, served.data),
            machine_type=profile.name,
            upstream_digest=upstream.digest,
        )
        log.info(
            "filtered %s:%s for machine type %s: upstream %s -> %s, chosen %s",
            name, reference, profile.name, upstream.digest, served.digest,
            " ".join(entry.digest for entry in filtering.kept),
        )  # fmt: skip

    @staticmethod
    def _with_nested(entry: Entry, nested: Mapping[int, Filtering]) -> Entry:
        """The entry pointing at its filtered nested index, when it is one."""
        filtering = nested.get(entry.position)
        if filtering is None or filtering.served is None:
            return entry
        served = filtering.served
        descriptor = {**entry.descriptor, "digest": served.digest, "size": len(served.data)}
        return dataclasses.replace(entry, descriptor=descriptor)

    async def _by_digest(self, name: str, digest: str) -> ServedManifest:
        stored = await self.store.get(name, digest)
        if stored is not None:
            return ServedManifest(stored.content, stored.media_type, digest)
        manifest = await self.upstream.get_manifest(name, digest)
        self.store.upstream_has(name, digest)  # so a warm pull of it skips the database
        return _as_served(manifest)

    async def _single_manifest(
        self, name: str, reference: str, served: ServedManifest, platform: PlatformKey
    ) -> ServedManifest:
        """For a client that takes no index: the chosen manifest for its platform, as is."""
        for _ in range(MAX_NESTING + 1):
            index = self._parse(name, reference, served.data)
            entry = entry_for_platform(index.entries, platform)
            if entry is None:
                raise errors.ManifestUnknown(
                    f"{name}:{reference} has no manifest for {platform}, and the client "
                    "accepts no image index",
                    detail={"name": name, "reference": reference, "platform": str(platform)},
                )
            served = await self._by_digest(name, entry.digest)
            if not mediatypes.is_index(served.media_type):
                return served
        raise errors.ManifestUnknown(f"{name}:{reference} nests indexes too deeply")

    def _parse(
        self, name: str, reference: str, data: bytes, document: dict[str, Any] | None = None
    ) -> Index:
        try:
            return Index.parse(data, document)
        except InvalidIndex as exc:
            raise self._invalid(name, reference, exc) from exc

    def _invalid(self, name: str, reference: str, exc: InvalidIndex) -> errors.RegistryError:
        return errors.UpstreamError(
            f"{self.upstream.description} served an invalid index for {name}:{reference}: {exc}"
        )


def _as_served(manifest: Manifest) -> ServedManifest:
    return ServedManifest(manifest.data, manifest.media_type, manifest.digest, manifest.stale)


def _offered(filtering: Filtering) -> list[str]:
    offered = []
    for verdict in filtering.verdicts:
        entry = verdict.entry
        if entry.platform is not None:
            offered.append(f"{entry.platform}: {','.join(entry.features) or 'generic'}")
    return offered


def _no_match(
    name: str, reference: str, profile: MachineProfile, filtering: Filtering
) -> NothingFits:
    return NothingFits(
        filtering.error or f"nothing in {name}:{reference} fits machine type {profile.name}",
        detail={
            "name": name,
            "reference": reference,
            "machine_type": profile.name,
            "features": [str(f) for f in profile.features],
            "offered": _offered(filtering),
        },
    )
