"""The filtered-digest store: every filtered index served, retrievable by its own digest.

Shared by every worker and replica through the database: a filtered index made by one is found
by another the first time a client asks it for that digest. Warm requests stay off the database:
filtered indexes once read are kept in memory, and so are digests known to be the upstream's.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from metahub import errors
from metahub.store.schema import filtered_manifests

log = logging.getLogger("metahub.store")
# What a database that cannot be reached raises: SQLAlchemy's errors, or the driver's socket
# errors before SQLAlchemy wraps them.
DATABASE_TROUBLE = (SQLAlchemyError, OSError, TimeoutError)


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
        self.description = database_description(engine)
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
        except DATABASE_TROUBLE as exc:
            # Still served, and by digest from this process's memory; other replicas and a
            # restart will not know it until a later request stores it again.
            log.warning(
                "could not store filtered index %s of %s in the database (%s); serving it anyway",
                digest,
                manifest.repository,
                _describe(exc),
            )
        self._remember(key, manifest)

    def upstream_has(self, repository: str, digest: str) -> None:
        """Note that the upstream serves `digest` in `repository`: later `get`s skip the DB."""
        key = (repository, digest)
        self._upstream[key] = None
        self._upstream.move_to_end(key)
        while len(self._upstream) > self._upstream_entries:
            self._upstream.popitem(last=False)

    def remembered(self, repository: str, digest: str) -> StoredManifest | None:
        """A filtered index held in memory, as get finds it first; None: get must look further."""
        key = (repository, digest)
        found = self._memory.get(key)
        if found is not None:
            self._memory.move_to_end(key)
        return found

    def known_upstream(self, repository: str, digest: str) -> bool:
        """Whether get would answer None from memory: a digest the upstream itself serves."""
        return (repository, digest) in self._upstream

    async def get(self, repository: str, digest: str) -> StoredManifest | None:
        key = (repository, digest)
        found = self._memory.get(key)
        if found is not None:
            self._memory.move_to_end(key)
            return found
        if key in self._upstream:
            self._upstream.move_to_end(key)
            return None
        try:
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
        except DATABASE_TROUBLE as exc:
            raise errors.DatabaseUnavailable(
                f"MetaHub's database ({self.description}) cannot be reached to look up {digest}",
                detail={"digest": digest},
            ) from exc
        if row is None:
            return None
        manifest = StoredManifest(row.repository, row.media_type, bytes(row.content))
        self._remember(key, manifest)
        return manifest

    def _remember(self, key: tuple[str, str], manifest: StoredManifest) -> None:
        self._memory[key] = manifest
        while len(self._memory) > self._memory_entries:
            self._memory.popitem(last=False)


def database_description(engine: AsyncEngine) -> str:
    """The database as messages may name it: driver, host and database, never the password."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return f"SQLite {url.database}"
    where = f"{url.host}:{url.port}" if url.port else str(url.host)
    return f"{url.get_backend_name()} at {where}/{url.database}"


def _describe(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
