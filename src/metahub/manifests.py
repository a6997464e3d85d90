"""The data path for manifests: upstream -> selection -> filtered-digest store.

A manifest asked for by digest is served with exactly those bytes: either a filtered index this
MetaHub made (from the store) or the upstream's own document, since a client that pins a digest
verifies the bytes against it. Only a tag can resolve to a filtered index.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from metahub import errors
from metahub.auth.tokens import Principal
from metahub.features.selection import MachineProfile, Matchers, NoMatchingEntry, select
from metahub.oci import mediatypes
from metahub.oci.digest import Digest, looks_like_digest
from metahub.oci.index import Index, InvalidIndex
from metahub.store.digests import FilteredDigestStore, StoredManifest
from metahub.upstream.base import Upstream

log = logging.getLogger("metahub.manifests")


@dataclass(frozen=True, slots=True)
class ServedManifest:
    data: bytes
    media_type: str
    digest: str


class ManifestService:
    def __init__(
        self,
        upstream: Upstream,
        store: FilteredDigestStore,
        profiles: Mapping[str, MachineProfile],
        matchers: Matchers,
    ) -> None:
        self.upstream = upstream
        self.store = store
        self.profiles = profiles
        self.matchers = matchers

    def profile(self, principal: Principal) -> MachineProfile | None:
        if principal.machine_type is None:
            return None
        profile = self.profiles.get(principal.machine_type)
        if profile is None:
            raise errors.Unauthorized(
                f"machine type {principal.machine_type!r} no longer exists; log in again"
            )
        return profile

    async def get(self, name: str, reference: str, principal: Principal) -> ServedManifest:
        profile = self.profile(principal)
        if looks_like_digest(reference):
            stored = await self.store.get(reference)
            if stored is not None and stored.repository == name:
                return ServedManifest(stored.content, stored.media_type, reference)
            manifest = await self.upstream.get_manifest(name, reference)
            return ServedManifest(manifest.data, manifest.media_type, manifest.digest)

        manifest = await self.upstream.get_manifest(name, reference)
        if profile is None or not mediatypes.is_index(manifest.media_type):
            return ServedManifest(manifest.data, manifest.media_type, manifest.digest)
        try:
            index = Index.parse(manifest.data)
        except InvalidIndex as exc:
            raise errors.UpstreamError(
                f"{self.upstream.description} served an invalid index for {name}:{reference}: {exc}"
            ) from exc
        if not index.has_features():
            return ServedManifest(manifest.data, manifest.media_type, manifest.digest)
        try:
            selection = select(index, profile, self.matchers)
        except NoMatchingEntry as exc:
            raise errors.ManifestUnknown(
                str(exc),
                detail={
                    "name": name,
                    "reference": reference,
                    "machine_type": profile.name,
                    "features": [str(f) for f in profile.features],
                    "offered": exc.offered,
                },
            ) from exc
        data = index.with_entries(selection.kept)
        digest = str(Digest.of(data))
        await self.store.put(
            digest,
            StoredManifest(name, manifest.media_type, data),
            machine_type=profile.name,
            upstream_digest=manifest.digest,
        )
        log.info(
            "filtered %s:%s for machine type %s: upstream %s -> %s, chosen %s",
            name,
            reference,
            profile.name,
            manifest.digest,
            digest,
            " ".join(entry.digest for entry in selection.kept),
        )
        return ServedManifest(data, manifest.media_type, digest)
