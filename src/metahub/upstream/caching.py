"""Manifests through caches: what makes a cluster-wide pull cost the upstream one request.

Wraps any Upstream (as distribution's proxy wraps its stores):
- manifests and indexes by digest in a byte-bounded LRU (content addressed, so never stale);
- tag -> digest for `tag_ttl` seconds, for the `tag_entries` tags asked last; after that one HEAD
  revalidates it (Docker Hub does not count HEADs against its rate limit) and a GET follows only
  when the digest moved;
- identical concurrent upstream calls coalesced, so a cold tag asked by 200 nodes at once costs
  at most one HEAD and one GET;
- stale-if-error: when the upstream is unreachable, times out, or answers 5xx/429, a tag seen
  before is still served from cache, marked stale.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from metahub import errors, metrics
from metahub.cache.lru import CountedLRU, SizedLRU
from metahub.cache.singleflight import SingleFlight
from metahub.oci.digest import looks_like_digest
from metahub.upstream.base import BlobStream, ByteRange, Manifest, ManifestHead, Referrers, Upstream

log = logging.getLogger("metahub.cache")
# A tag entry costs a few hundred bytes; 100,000 of them (tens of MB) outnumber what clusters pull.
DEFAULT_TAG_ENTRIES = 100_000

# Errors that mean "the upstream could not answer", as opposed to an answer such as 404.
UPSTREAM_TROUBLE = (
    errors.UpstreamUnavailable,
    errors.UpstreamTimeout,
    errors.UpstreamError,
    errors.TooManyRequests,
)


@dataclass(slots=True)
class _TagEntry:
    digest: str
    checked: float  # monotonic time of the last upstream confirmation


class CachingUpstream:
    def __init__(
        self,
        inner: Upstream,
        *,
        tag_ttl: float = 60.0,
        content_bytes: int = 64 * 1024 * 1024,
        tag_entries: int = DEFAULT_TAG_ENTRIES,
    ) -> None:
        self.inner = inner
        self.description = inner.description
        self.tag_ttl = tag_ttl
        # Keyed by repository too: an upstream may hold a digest in one repository and not in
        # another, and a cache must not answer what the upstream would refuse.
        self._content: SizedLRU[tuple[str, str], Manifest] = SizedLRU(
            "manifest", content_bytes, lambda m: len(m.data) + 256
        )
        # Bounded: every tag a client names once would otherwise stay for the process's life.
        self._tags: CountedLRU[tuple[str, str], _TagEntry] = CountedLRU(tag_entries)
        self._flights: SingleFlight[tuple[str, str, str], Manifest] = SingleFlight("manifest")
        self._tag_hit = metrics.CACHE.labels("tag", "hit")  # every warm pull counts one

    @property
    def warm(self) -> bool:
        return len(self._content) > 0

    async def get_manifest(self, name: str, reference: str) -> Manifest:
        if looks_like_digest(reference):
            return await self._by_digest(name, reference)
        key = (name, reference)
        entry = self._tags.get(key)
        if entry is not None and time.monotonic() - entry.checked < self.tag_ttl:
            self._tag_hit.inc()
            return await self._by_digest(name, entry.digest)
        metrics.CACHE.labels("tag", "stale" if entry else "miss").inc()
        try:
            return await self._flights.do(
                ("tag", name, reference), lambda: self._resolve_tag(name, reference, entry)
            )
        except UPSTREAM_TROUBLE as exc:
            if entry is None:
                raise
            cached = self._content.get((name, entry.digest))
            if cached is None:
                raise
            metrics.STALE_SERVES.inc()
            log.warning(
                "serving %s:%s from cache (%s): %s", name, reference, entry.digest, exc.message
            )
            return replace(cached, stale=True)
        except errors.ManifestUnknown:
            self._tags.pop(key)  # deleted upstream: forget it rather than serve it
            raise

    def fresh(self, name: str, reference: str) -> Manifest | None:
        """The manifest get_manifest would serve from memory alone, without asking the upstream:
        a fresh tag (or a digest) whose manifest is cached. Looks without touching anything.
        """
        if looks_like_digest(reference):
            digest = reference
        else:
            entry = self._tags.peek((name, reference))
            if entry is None or time.monotonic() - entry.checked >= self.tag_ttl:
                return None
            digest = entry.digest
        return self._content.peek((name, digest))

    def cached_manifest(self, name: str, reference: str) -> Manifest | None:
        """What get_manifest answers when `fresh` says memory can: the same lookups and
        counts, without a coroutine. None when it cannot (ask get_manifest then)."""
        if looks_like_digest(reference):
            return self._content.get((name, reference))
        entry = self._tags.get((name, reference))
        if entry is None or time.monotonic() - entry.checked >= self.tag_ttl:
            return None
        metrics.count(self._tag_hit)
        return self._content.get((name, entry.digest))

    async def _resolve_tag(self, name: str, tag: str, entry: _TagEntry | None) -> Manifest:
        if entry is not None:
            head = await self.inner.head_manifest(name, tag)
            if head is not None and head.digest == entry.digest:
                entry.checked = time.monotonic()
                return await self._by_digest(name, entry.digest)
        manifest = await self.inner.get_manifest(name, tag)
        self._content.put((name, manifest.digest), replace(manifest, document=None))
        self._tags.put((name, tag), _TagEntry(manifest.digest, time.monotonic()))
        return manifest

    async def _by_digest(self, name: str, digest: str) -> Manifest:
        cached = self._content.get((name, digest))
        if cached is not None:
            return cached
        return await self._flights.do(
            ("digest", name, digest), lambda: self._fetch_digest(name, digest)
        )

    async def _fetch_digest(self, name: str, digest: str) -> Manifest:
        manifest = await self.inner.get_manifest(name, digest)
        self._content.put((name, digest), replace(manifest, document=None))
        return manifest

    async def head_manifest(self, name: str, reference: str) -> ManifestHead | None:
        manifest = await self.get_manifest(name, reference)
        return ManifestHead(manifest.digest, manifest.media_type, len(manifest.data))

    # Everything else goes straight through.

    async def open_blob(
        self,
        name: str,
        digest: str,
        byte_range: ByteRange | None = None,
        *,
        pass_redirect: bool = False,
    ) -> BlobStream:
        return await self.inner.open_blob(name, digest, byte_range, pass_redirect=pass_redirect)

    async def blob_size(self, name: str, digest: str) -> tuple[int, str]:
        return await self.inner.blob_size(name, digest)

    async def tags(self, name: str) -> list[str]:
        return await self.inner.tags(name)

    async def referrers(self, name: str, digest: str, artifact_type: str | None) -> Referrers:
        return await self.inner.referrers(name, digest, artifact_type)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()
