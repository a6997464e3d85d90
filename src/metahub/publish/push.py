"""`metahub push`: from per-target images to one feature-tagged index, pushed with every tag.

1. Each member's manifest is read from its registry (an index member is expanded).
2. The index is built (deterministic bytes: the same spec and members give the same digest).
3. Every entry's blobs reach the target repository: those already there are left alone (so a
   re-push uploads nothing), those in another repository of the same registry are mounted, and
   the rest (the mount refused, or another registry) are streamed across.
4. Every entry's manifest is pushed by digest with its exact bytes, then the index to each tag.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from metahub.images.index import BuiltIndex, IndexType, build_index
from metahub.images.members import Resolved, Source, resolve_members
from metahub.images.spec import ImageRef, ImageSpec
from metahub.oci.digest import Digest
from metahub.publish.client import RegistryClient, RegistryClientError
from metahub.publish.credentials import Credentials, docker_credentials

BlobOutcome = Literal["present", "mounted", "copied"]
# Blobs copied at once: enough to overlap round trips, few enough not to swamp a registry.
COPY_CONCURRENCY = 4


class Reporter(Protocol):
    """Where push tells what it does; the CLI shows it with rich, tests may collect it."""

    def blob_started(self, digest: str, size: int, label: str) -> None: ...

    def blob_advanced(self, digest: str, nbytes: int) -> None: ...

    def blob_done(self, digest: str, outcome: BlobOutcome) -> None: ...

    def note(self, message: str) -> None: ...


class SilentReporter:
    def blob_started(self, digest: str, size: int, label: str) -> None:
        pass

    def blob_advanced(self, digest: str, nbytes: int) -> None:
        pass

    def blob_done(self, digest: str, outcome: BlobOutcome) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass(slots=True)
class PushResult:
    target: ImageRef
    index: BuiltIndex
    entries: list[Resolved]
    tags: tuple[str, ...]
    blobs: dict[str, BlobOutcome] = field(default_factory=dict)
    manifests_pushed: int = 0
    tags_updated: list[str] = field(default_factory=list)

    def refs(self) -> list[str]:
        base = f"{self.target.registry or self.target.host}/{self.target.repository}"
        return [f"{base}:{tag}@{self.index.digest}" for tag in self.tags]

    def count(self, outcome: BlobOutcome) -> int:
        return sum(1 for value in self.blobs.values() if value == outcome)


class Clients:
    """One client per registry the spec names, each with its credentials."""

    def __init__(
        self,
        target_host: str,
        creds: Credentials | None,
        *,
        insecure: bool = False,
        docker_config: Path | None = None,
    ) -> None:
        self._target_host = target_host
        self._creds = creds
        self._insecure = insecure
        self._docker_config = docker_config
        self._clients: dict[str, RegistryClient] = {}

    def get(self, host: str) -> RegistryClient:
        client = self._clients.get(host)
        if client is None:
            creds = self._creds if host == self._target_host else None
            if creds is None:
                creds = docker_credentials(host, self._docker_config)
            client = RegistryClient(host, creds, insecure=self._insecure)
            self._clients[host] = client
        return client

    def source_for(self, ref: ImageRef) -> tuple[Source, str]:
        return self.get(ref.host), ref.remote_repository

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()


async def resolve_and_build(
    spec: ImageSpec, clients: Clients, index_type: IndexType
) -> tuple[list[Resolved], BuiltIndex]:
    entries = await resolve_members(spec, clients.source_for)
    return entries, build_index(spec, entries, index_type)


async def push(
    spec: ImageSpec,
    clients: Clients,
    *,
    index_type: IndexType = "oci",
    dry_run: bool = False,
    reporter: Reporter | None = None,
) -> PushResult:
    reporter = reporter or SilentReporter()
    target = spec.ref
    entries, index = await resolve_and_build(spec, clients, index_type)
    result = PushResult(target, index, entries, spec.all_tags)
    if dry_run:
        return result
    registry = clients.get(target.host)
    repository = target.remote_repository
    await _copy_blobs(registry, repository, entries, result, reporter)
    for entry in _unique_manifests(entries):
        if await registry.manifest_digest(repository, entry.digest) == entry.digest:
            continue
        await registry.put_manifest(repository, entry.digest, entry.manifest, entry.media_type)
        result.manifests_pushed += 1
    for tag in result.tags:
        if await registry.manifest_digest(repository, tag) == index.digest:
            reporter.note(f"{repository}:{tag} is up to date")
            continue
        await registry.put_manifest(repository, tag, index.data, index.media_type)
        result.tags_updated.append(tag)
        reporter.note(f"{repository}:{tag} -> {index.digest}")
    return result


def _unique_manifests(entries: list[Resolved]) -> list[Resolved]:
    seen: dict[str, Resolved] = {}
    for entry in entries:
        seen.setdefault(entry.digest, entry)
    return list(seen.values())


async def _copy_blobs(
    registry: RegistryClient,
    repository: str,
    entries: list[Resolved],
    result: PushResult,
    reporter: Reporter,
) -> None:
    """Each blob once, however many entries share it, a few at a time."""
    wanted: dict[str, tuple[dict[str, Any], Resolved]] = {}
    for entry in entries:
        for blob in entry.blobs:
            wanted.setdefault(str(blob["digest"]), (blob, entry))
    limit = asyncio.Semaphore(COPY_CONCURRENCY)

    async def one(digest: str, blob: dict[str, Any], entry: Resolved) -> None:
        async with limit:
            result.blobs[digest] = await _copy_blob(
                registry, repository, digest, blob, entry, reporter
            )

    async with asyncio.TaskGroup() as group:
        for digest, (blob, entry) in wanted.items():
            group.create_task(one(digest, blob, entry))


async def _copy_blob(
    registry: RegistryClient,
    repository: str,
    digest: str,
    blob: dict[str, Any],
    entry: Resolved,
    reporter: Reporter,
) -> BlobOutcome:
    if await registry.blob_exists(repository, digest):
        reporter.blob_done(digest, "present")
        return "present"
    source = entry.source
    if not isinstance(source, RegistryClient):
        raise RegistryClientError(f"cannot copy blob {digest} from {source.description}")
    same_registry = source is registry
    location = None
    if same_registry and entry.repository != repository:
        try:
            location = await registry.mount_blob(repository, digest, entry.repository)
        except RegistryClientError as exc:
            if exc.status not in (401, 403):
                raise
            # No right to mount from there (the token left the source scope out): copy.
            location = await registry.start_upload(repository)
        else:
            if location is None:
                reporter.blob_done(digest, "mounted")
                return "mounted"
    if location is None:
        location = await registry.start_upload(repository)
    size = int(blob.get("size") or 0)
    reporter.blob_started(digest, size, f"{entry.ref}")
    await registry.finish_upload(
        repository, location, digest, size, _download(source, entry.repository, digest, reporter)
    )
    reporter.blob_done(digest, "copied")
    return "copied"


def _download(
    source: RegistryClient, repository: str, digest: str, reporter: Reporter
) -> Callable[[], AsyncIterator[bytes]]:
    """A fresh stream from the source each time it is called, checked against its digest."""

    async def chunks() -> AsyncIterator[bytes]:
        expected = Digest.parse(digest)
        hasher = expected.hasher()
        download = await source.open_blob(repository, digest)
        async for chunk in download.chunks:
            hasher.update(chunk)
            reporter.blob_advanced(digest, len(chunk))
            yield chunk
        if hasher.hexdigest() != expected.hex:
            raise RegistryClientError(
                f"{source.description} sent bytes for blob {digest} that do not match it"
            )

    return chunks
