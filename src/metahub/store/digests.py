"""The filtered-digest store: every filtered index served, retrievable by its own digest.

Shared by every worker and replica through the database: a filtered index made by one is found
by another the first time a client asks it for that digest. Warm requests stay off the database:
filtered indexes once read are kept in memory, and so are digests known to be the upstream's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from metahub.store.schema import filtered_manifests


@dataclass(frozen=True, slots=True)
class StoredManifest:
    repository: str
    media_type: str
    content: bytes


class FilteredDigestStore:
    """Writes once per new digest; reads are served from a small in-memory LRU first."""

    def __init__(
        self, engine: AsyncEngine, *, memory_entries: int = 1024, upstream_entries: int = 16384
    ) -> None:
        self._engine = engine
        self._memory: OrderedDict[tuple[str, str], StoredManifest] = OrderedDict()
        self._memory_entries = memory_entries
        # (repository, digest) the upstream itself serves: no filtered index can be stored under
        # such a digest with other bytes, so asking the database again could only say "no".
        self._upstream: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._upstream_entries = upstream_entries

    async def put(
        self,
        digest: str,
        manifest: StoredManifest,
        *,
        machine_type: str,
        upstream_digest: str,
    ) -> None:
        key = (manifest.repository, digest)
        if key in self._memory:
            self._memory.move_to_end(key)
            return
        try:
            async with self._engine.begin() as connection:
                await connection.execute(
                    insert(filtered_manifests).values(
                        digest=digest,
                        repository=manifest.repository,
                        media_type=manifest.media_type,
                        content=manifest.content,
                        machine_type=machine_type,
                        upstream_digest=upstream_digest,
                    )
                )
        except IntegrityError:
            pass  # another worker or replica stored the same bytes first
        self._remember(key, manifest)

    def upstream_has(self, repository: str, digest: str) -> None:
        """Note that the upstream serves `digest` in `repository`: later `get`s skip the DB."""
        key = (repository, digest)
        self._upstream[key] = None
        self._upstream.move_to_end(key)
        while len(self._upstream) > self._upstream_entries:
            self._upstream.popitem(last=False)

    async def get(self, repository: str, digest: str) -> StoredManifest | None:
        key = (repository, digest)
        found = self._memory.get(key)
        if found is not None:
            self._memory.move_to_end(key)
            return found
        if key in self._upstream:
            self._upstream.move_to_end(key)
            return None
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(
                        filtered_manifests.c.repository,
                        filtered_manifests.c.media_type,
                        filtered_manifests.c.content,
                    ).where(
                        filtered_manifests.c.digest == digest,
                        filtered_manifests.c.repository == repository,
                    )
                )
            ).first()
        if row is None:
            return None
        manifest = StoredManifest(row.repository, row.media_type, bytes(row.content))
        self._remember(key, manifest)
        return manifest

    def _remember(self, key: tuple[str, str], manifest: StoredManifest) -> None:
        self._memory[key] = manifest
        while len(self._memory) > self._memory_entries:
            self._memory.popitem(last=False)
