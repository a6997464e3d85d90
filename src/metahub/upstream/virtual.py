"""Virtual images: indexes the config's `images:` describes, served without existing upstream.

Wraps the real upstream (beneath the caches, so caching, selection, explain and the digest
store treat a virtual image like any other):

- `get_manifest(name, tag)` of a virtual tag builds the index from the members' manifests,
  read from their own repositories (the same resolution `metahub push` does, so the bytes, and
  the digest, are the ones `metahub push` of the same spec would make);
- every digest a built index reaches (its members' manifests, configs and layers) is mapped to
  the member repository holding it, so manifest and blob requests under the virtual name are
  answered from there; a digest not in the (bounded) map is looked for under the virtual name
  upstream, then in each member repository;
- `tags(name)` lists the virtual tags (and the upstream's, when the name exists there too);
  tags the config does not name pass through to the upstream unchanged.

A missing member is `404 MANIFEST_UNKNOWN` naming the virtual image and the member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from metahub import errors
from metahub.cache.lru import SizedLRU
from metahub.images.index import BuiltIndex, IndexBuildError, build_index
from metahub.images.members import (
    Fetched,
    MemberError,
    Resolved,
    Source,
    resolve_members,
)
from metahub.images.spec import ImageRef, ImageSpec
from metahub.oci import mediatypes
from metahub.oci.digest import Digest, looks_like_digest
from metahub.oci.registries import repository_in
from metahub.upstream.base import BlobStream, ByteRange, Manifest, ManifestHead, Referrers, Upstream

MAX_OWNED_DIGESTS = 100_000
MAX_BUILT_INDEXES = 1024
NOT_THERE = (errors.ManifestUnknown, errors.BlobUnknown, errors.NameUnknown)


@dataclass(frozen=True, slots=True)
class _Built:
    manifest: Manifest
    member_digests: tuple[str, ...]  # each member's manifest digest when this was built


class _UpstreamSource:
    """The upstream as a member source; remembers what each member's tag resolved to."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.description = upstream.description
        self.resolved: dict[tuple[str, str], str] = {}

    async def manifest(self, repository: str, reference: str) -> Fetched:
        manifest = await self.upstream.get_manifest(repository, reference)
        self.resolved[(repository, reference)] = manifest.digest
        return Fetched(manifest.data, manifest.media_type, manifest.digest)

    async def blob(self, repository: str, digest: str, limit: int) -> bytes:
        stream = await self.upstream.open_blob(repository, digest)
        if stream.size > limit:
            await stream.close()
            raise errors.UpstreamError(f"{self.description}: blob {digest} is too large")
        data = b"".join([chunk async for chunk in stream.chunks])
        expected = Digest.parse(digest)
        if Digest.of(data, expected.algorithm) != expected:
            raise errors.UpstreamError(f"{self.description} served wrong bytes for {digest}")
        return data


class VirtualUpstream:
    def __init__(
        self, inner: Upstream, images: Sequence[ImageSpec], registry: str | None = None
    ) -> None:
        """`registry`: the name of the registry the images are served as part of, when requests
        reach it with that registry's own repository names (Docker Hub's `library/` added)."""
        self.inner = inner
        self.description = inner.description
        self._specs: dict[str, dict[str, ImageSpec]] = {}
        for spec in images:
            name = spec.ref.repository
            if registry is not None:
                name = repository_in(registry, name)
            tags = self._specs.setdefault(name, {})
            for tag in spec.all_tags:
                tags[tag] = spec
        self._built: dict[tuple[str, str], _Built] = {}
        self._indexes: SizedLRU[tuple[str, str], Manifest] = SizedLRU(
            "virtual-index", MAX_BUILT_INDEXES, lambda _: 1
        )
        self._owners: SizedLRU[tuple[str, str], str] = SizedLRU(
            "virtual-owner", MAX_OWNED_DIGESTS, lambda _: 1
        )

    def is_virtual(self, name: str, tag: str | None = None) -> bool:
        tags = self._specs.get(name)
        return tags is not None and (tag is None or tag in tags)

    # -- building ------------------------------------------------------------------------

    async def _build(self, name: str, tag: str) -> Manifest:
        spec = self._specs[name][tag]
        source = _UpstreamSource(self.inner)
        label = f"virtual image {name}:{tag}"

        def source_for(ref: ImageRef) -> tuple[Source, str]:
            return source, ref.repository

        try:
            entries = await resolve_members(spec, source_for)
            index = build_index(spec, entries)
        except NOT_THERE as exc:
            raise errors.ManifestUnknown(
                f"{label} cannot be built: a member is missing: {exc.message}",
                detail={"name": name, "reference": tag, "member": exc.detail},
            ) from exc
        except (MemberError, IndexBuildError) as exc:
            raise errors.UpstreamError(f"{label} cannot be built: {exc}") from exc
        manifest = Manifest(index.data, index.media_type, index.digest)
        members = tuple(
            source.resolved.get((m.ref.repository, m.ref.reference), "") for m in spec.manifests
        )
        self._remember(name, tag, manifest, members, entries, index)
        return manifest

    def _remember(
        self,
        name: str,
        tag: str,
        manifest: Manifest,
        members: tuple[str, ...],
        entries: Sequence[Resolved],
        index: BuiltIndex,
    ) -> None:
        self._built[(name, tag)] = _Built(manifest, members)
        self._indexes.put((name, index.digest), manifest)
        for entry in entries:
            self._owners.put((name, entry.digest), entry.repository)
            for blob in entry.blobs:
                self._owners.put((name, str(blob["digest"])), entry.repository)

    def _member_repositories(self, name: str) -> list[str]:
        found: dict[str, None] = {}
        for spec in self._specs.get(name, {}).values():
            for member in spec.manifests:
                found.setdefault(member.ref.repository, None)
        return list(found)

    # -- the Upstream interface ----------------------------------------------------------

    async def get_manifest(self, name: str, reference: str) -> Manifest:
        if not self.is_virtual(name):
            return await self.inner.get_manifest(name, reference)
        if not looks_like_digest(reference):
            if self.is_virtual(name, reference):
                return await self._build(name, reference)
            return await self.inner.get_manifest(name, reference)
        built = self._indexes.get((name, reference))
        if built is not None:
            return built
        owner = self._owners.get((name, reference))
        if owner is not None:
            return await self.inner.get_manifest(owner, reference)
        try:
            return await self.inner.get_manifest(name, reference)
        except NOT_THERE:
            pass
        # Not seen since this process started: rebuilding finds the index and the owners.
        for tag in self._specs[name]:
            try:
                manifest = await self._build(name, tag)
            except errors.RegistryError:
                continue
            if manifest.digest == reference:
                return manifest
        owner = self._owners.get((name, reference))
        if owner is not None:
            return await self.inner.get_manifest(owner, reference)
        raise errors.ManifestUnknown(
            f"manifest {name}@{reference} is in neither {self.description} nor a member of "
            f"virtual image {name}",
            detail={"name": name, "reference": reference},
        )

    async def head_manifest(self, name: str, reference: str) -> ManifestHead | None:
        if not self.is_virtual(name):
            return await self.inner.head_manifest(name, reference)
        if looks_like_digest(reference):
            manifest = await self.get_manifest(name, reference)
            return ManifestHead(manifest.digest, manifest.media_type, len(manifest.data))
        if not self.is_virtual(name, reference):
            return await self.inner.head_manifest(name, reference)
        built = self._built.get((name, reference))
        if built is None:
            return None
        spec = self._specs[name][reference]
        for member, digest in zip(spec.manifests, built.member_digests, strict=True):
            ref = member.ref
            if ref.digest is not None:
                continue  # pinned: cannot move
            try:
                head = await self.inner.head_manifest(ref.repository, ref.reference)
            except NOT_THERE:
                return None  # a GET rebuilds and names the missing member
            if head is None or head.digest != digest:
                return None
        manifest = built.manifest
        return ManifestHead(manifest.digest, manifest.media_type, len(manifest.data))

    async def open_blob(
        self,
        name: str,
        digest: str,
        byte_range: ByteRange | None = None,
        *,
        pass_redirect: bool = False,
    ) -> BlobStream:
        if not self.is_virtual(name):
            return await self.inner.open_blob(name, digest, byte_range, pass_redirect=pass_redirect)
        for repository in self._blob_candidates(name, digest):
            try:
                stream = await self.inner.open_blob(
                    repository, digest, byte_range, pass_redirect=pass_redirect
                )
            except NOT_THERE:
                continue
            self._owners.put((name, digest), repository)
            return stream
        raise self._blob_unknown(name, digest)

    async def blob_size(self, name: str, digest: str) -> tuple[int, str]:
        if not self.is_virtual(name):
            return await self.inner.blob_size(name, digest)
        for repository in self._blob_candidates(name, digest):
            try:
                size = await self.inner.blob_size(repository, digest)
            except NOT_THERE:
                continue
            self._owners.put((name, digest), repository)
            return size
        raise self._blob_unknown(name, digest)

    def _blob_candidates(self, name: str, digest: str) -> list[str]:
        owner = self._owners.get((name, digest))
        candidates = [owner] if owner is not None else []
        for repository in (name, *self._member_repositories(name)):
            if repository not in candidates:
                candidates.append(repository)
        return candidates

    def _blob_unknown(self, name: str, digest: str) -> errors.RegistryError:
        return errors.BlobUnknown(
            f"blob {digest} is in neither {self.description} nor a member of virtual image {name}",
            detail={"name": name, "digest": digest},
        )

    async def tags(self, name: str) -> list[str]:
        if not self.is_virtual(name):
            return await self.inner.tags(name)
        try:
            upstream = await self.inner.tags(name)
        except errors.NameUnknown:
            upstream = []
        return sorted({*self._specs[name], *upstream})

    async def referrers(self, name: str, digest: str, artifact_type: str | None) -> Referrers:
        if not self.is_virtual(name):
            return await self.inner.referrers(name, digest, artifact_type)
        owner = self._owners.get((name, digest))
        try:
            return await self.inner.referrers(owner or name, digest, artifact_type)
        except errors.NameUnknown:
            empty = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}
            return Referrers(orjson.dumps(empty), mediatypes.OCI_INDEX, None)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


def with_virtual_images(
    upstream: Upstream, images: Sequence[ImageSpec], registry: str | None = None
) -> Upstream:
    """The upstream, serving `images` too when there are any."""
    return VirtualUpstream(upstream, images, registry) if images else upstream
