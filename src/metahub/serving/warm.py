"""Warming: fetch what each machine type's pull of an image would get, before anyone pulls.

For every (image, machine type) the tag is resolved exactly as a pull resolves it
(`ManifestService.resolve`: the upstream through its caches, selection, the filtered index
recorded in the filtered-digest store), then every manifest the served index lists is read by
digest, as a client reads it, so each lands in the manifest cache. The blobs those manifests
name are then read through the blob service into the blob cache, each digest once however many
machine types and images share it, a few at a time.

The work is reported as it happens, one event (a JSON object) at a time, so the API can stream
it to a client that shows progress: `manifests` per (image, machine type), `blob` when a blob
starts, `progress` as its bytes arrive, `blob_done` with `fetched`, `cached` or `failed`, and a
final `summary`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from metahub import errors
from metahub.features.selection import MachineProfile
from metahub.oci import mediatypes
from metahub.oci.index import Index, InvalidIndex
from metahub.serving.blobs import BlobService
from metahub.serving.manifests import MAX_NESTING, ManifestService, NothingFits, ServedManifest

log = logging.getLogger("metahub.serving.warm")

# Blobs fetched at once: enough to keep a link busy, few enough not to crowd out live pulls.
CONCURRENCY = 4
# A `progress` event at most once per this many bytes of a blob (and once at its end).
PROGRESS_STEP = 4 * 1024 * 1024

Event = dict[str, Any]
BlobResult = Literal["fetched", "cached", "failed"]


class NoBlobCache(errors.Conflict):
    """Warming needs somewhere to keep blobs."""

    def __init__(self) -> None:
        super().__init__(
            "warming needs the blob cache: set cache.blobs (path and max_size) in the config; "
            "without it, blobs are streamed from the upstream on every pull and not kept"
        )


@dataclass(frozen=True, slots=True)
class WarmImage:
    image: str  # as the caller wrote it
    name: str
    reference: str


@dataclass(slots=True)
class _Blob:
    digest: str
    size: int
    repositories: list[str] = field(default_factory=list)  # the first is fetched from


@dataclass(slots=True)
class _Tally:
    manifests: int = 0
    manifest_failures: int = 0
    fetched: int = 0
    cached: int = 0
    failed: int = 0
    bytes_fetched: int = 0

    def summary(self) -> Event:
        return {
            "event": "summary",
            "manifests": self.manifests,
            "manifest_failures": self.manifest_failures,
            "fetched": self.fetched,
            "cached": self.cached,
            "failed": self.failed,
            "bytes_fetched": self.bytes_fetched,
        }


class Warmer:
    def __init__(
        self, manifests: ManifestService, blobs: BlobService, *, concurrency: int = CONCURRENCY
    ) -> None:
        if blobs.cache is None:
            raise NoBlobCache()
        self.manifests = manifests
        self.blobs = blobs
        self.concurrency = concurrency

    async def warm(
        self, images: Sequence[WarmImage], profiles: Sequence[MachineProfile]
    ) -> AsyncIterator[Event]:
        """Events as the work goes, ending with the summary."""
        tally = _Tally()
        blobs: dict[str, _Blob] = {}
        for image in images:
            for profile in profiles:
                event: Event = {
                    "event": "manifests",
                    "image": image.image,
                    "machine_type": profile.name,
                }
                try:
                    served = await self.manifests.resolve(image.name, image.reference, profile)
                    count = await self._walk(image.name, served, profile, blobs, 0)
                except errors.RegistryError as exc:
                    tally.manifest_failures += 1
                    outcome = "none" if isinstance(exc, NothingFits) else None
                    yield {**event, "outcome": outcome, "error": exc.message}
                    continue
                tally.manifests += count
                yield {**event, "outcome": served.outcome, "digest": served.digest, "count": count}
        async for blob_event in self._fetch_all(list(blobs.values()), tally):
            yield blob_event
        yield tally.summary()

    async def _walk(
        self,
        name: str,
        served: ServedManifest,
        profile: MachineProfile,
        blobs: dict[str, _Blob],
        depth: int,
    ) -> int:
        """Read every manifest under `served` by digest (caching it); note the blobs; count."""
        if mediatypes.is_index(served.media_type):
            if depth > MAX_NESTING:
                return 1
            try:
                index = Index.parse(served.data)
            except InvalidIndex as exc:
                raise errors.UpstreamError(f"an invalid index in {name}: {exc}") from exc
            count = 1
            for entry in index.entries:
                child = await self.manifests.get(name, entry.digest, profile)
                count += await self._walk(name, child, profile, blobs, depth + 1)
            return count
        for digest, size in _blobs_of(served.data):
            blob = blobs.setdefault(digest, _Blob(digest, size))
            if name not in blob.repositories:
                blob.repositories.append(name)
        return 1

    async def _fetch_all(self, blobs: list[_Blob], tally: _Tally) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.concurrency)
        tasks = [asyncio.create_task(self._fetch(blob, queue, slots)) for blob in blobs]
        pending = len(tasks)
        try:
            while pending:
                event = await queue.get()
                if event is None:
                    pending -= 1
                    continue
                if event["event"] == "blob_done":
                    result: BlobResult = event["result"]
                    setattr(tally, result, getattr(tally, result) + 1)
                    if result == "fetched":
                        tally.bytes_fetched += event["size"]
                yield event
        finally:  # the client went away: stop reading (the cache finishes what it started)
            for task in tasks:
                task.cancel()

    async def _fetch(
        self, blob: _Blob, queue: asyncio.Queue[Event | None], slots: asyncio.Semaphore
    ) -> None:
        try:
            async with slots:
                done: Event = {"event": "blob_done", "digest": blob.digest, "size": blob.size}
                try:
                    result = await self._fetch_blob(blob, queue)
                    await self._confirm_holders(blob)
                except errors.RegistryError as exc:
                    done.update(result="failed", error=exc.message)
                except (OSError, ValueError) as exc:
                    log.warning("warming blob %s failed: %s", blob.digest, exc)
                    done.update(result="failed", error=str(exc) or type(exc).__name__)
                else:
                    done["result"] = result
                queue.put_nowait(done)
        finally:
            queue.put_nowait(None)

    async def _fetch_blob(self, blob: _Blob, queue: asyncio.Queue[Event | None]) -> BlobResult:
        assert self.blobs.cache is not None
        name = blob.repositories[0]
        if self.blobs.cache.holds(blob.digest):
            await self.blobs.size(name, blob.digest)  # the upstream confirms `name` holds it
            return "cached"
        queue.put_nowait({"event": "blob", "digest": blob.digest, "size": blob.size})
        stream = await self.blobs.open(name, blob.digest, None)
        received = reported = 0
        try:
            async for chunk in stream.chunks:
                received += len(chunk)
                if received - reported >= PROGRESS_STEP:
                    reported = received
                    queue.put_nowait(_progress(blob, received))
        finally:
            await stream.close()
        if received != reported:
            queue.put_nowait(_progress(blob, received))
        if not self.blobs.cache.holds(blob.digest):
            raise errors.RegistryError(
                f"blob {blob.digest} was read but the blob cache did not keep it (its disk "
                "refused the write, or cache.blobs.max_size is smaller than what is warmed)",
                status=507,
            )
        return "fetched"

    async def _confirm_holders(self, blob: _Blob) -> None:
        """A cached blob is served under a repository once the upstream said it holds it: ask
        now for each other repository that shares it, while the upstream can answer."""
        for name in blob.repositories[1:]:
            await self.blobs.size(name, blob.digest)


def _progress(blob: _Blob, received: int) -> Event:
    return {"event": "progress", "digest": blob.digest, "bytes": received}


def _blobs_of(data: bytes) -> list[tuple[str, int]]:
    """The config and layers an image manifest names (foreign layers, with `urls`, are not
    the registry's to serve and are left out)."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(document, dict):
        return []
    descriptors = [document.get("config"), *(document.get("layers") or [])]
    found = []
    for descriptor in descriptors:
        if not isinstance(descriptor, dict) or descriptor.get("urls"):
            continue
        digest, size = descriptor.get("digest"), descriptor.get("size")
        if isinstance(digest, str) and isinstance(size, int):
            found.append((digest, size))
    return found
