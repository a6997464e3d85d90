"""The filtered-digest store: every filtered index served, retrievable by its own digest.

Shared by every worker and replica through the database: a filtered index made by one is found
by another the first time a client asks it for that digest. Warm requests stay off the database:
filtered indexes once read are kept in memory, and so are digests known to be the upstream's.

Retention (`database.filtered_retention_days`, off by default) prunes the rows no one was served
for that long. Each row's `last_served` is kept without a write per request: a request only
notes its key in memory (`mark_served`), and every `database.last_served_interval` seconds one
transaction dates the keys noted since (`flush_served`), then rows older than the retention are
deleted (`prune`). A row pruned while a process still serves it from memory is written back by
that process's next flush, so a digest someone is served never disappears from the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from metahub import errors
from metahub.store.schema import filtered_manifests
from metahub.store.sqlite_writer import SqliteWriter

log = logging.getLogger("metahub.store")
# What a database that cannot be reached raises: SQLAlchemy's errors, or the driver's socket
# errors before SQLAlchemy wraps them.
DATABASE_TROUBLE = (SQLAlchemyError, OSError, TimeoutError)
# `last_served=func.now()` as SQLAlchemy renders it for SQLite.
_SQLITE_INSERT = (
    "INSERT INTO filtered_manifests (digest, repository, media_type, content, machine_type, "
    "upstream_digest, last_served) VALUES (?, ?, ?, ?, ?, ?, CURRENT_TIMESTAMP)"
)


@dataclass(frozen=True, slots=True)
class StoredManifest:
    repository: str
    media_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class _Record:
    """A row as this process knows it: enough to write it back if retention pruned it."""

    manifest: StoredManifest
    machine_type: str
    upstream_digest: str


# Served keys noted between two flushes, at most: past it, marks are dropped (and the row is
# then dated by another request, or by its creation).
MAX_PENDING_MARKS = 100_000


class FilteredDigestStore:
    """Writes once per new digest; reads are served from a small in-memory LRU first."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        memory_entries: int = 1024,
        upstream_entries: int = 16384,
        retention: timedelta | None = None,
        busy_timeout: float = 5.0,
    ) -> None:
        self._engine = engine
        self.description = database_description(engine)
        self.retention = retention
        # A SQLite file takes new rows through a connection of its own (store/sqlite_writer.py);
        # an in-memory database is the engine's connection alone.
        path = engine.url.database if engine.dialect.name == "sqlite" else None
        self.writer = (
            SqliteWriter(path, busy_timeout=busy_timeout)
            if path and path != ":memory:" and not path.startswith("file:")
            else None
        )
        # (repository, digest) served since the last flush; the record when this process has it.
        self._served: dict[tuple[str, str], _Record | None] = {}
        self._memory: OrderedDict[tuple[str, str], _Record] = OrderedDict()
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
        record = _Record(manifest, machine_type, upstream_digest)
        if key in self._memory:
            self._memory.move_to_end(key)
            self.mark_served(key, record)
            return
        try:
            await self._insert(digest, record)
        except IntegrityError:
            # Another worker or replica stored the same bytes first; served now all the same.
            self.mark_served(key, record)
        except DATABASE_TROUBLE as exc:
            # Still served, and by digest from this process's memory; other replicas and a
            # restart will not know it until a later request stores it again.
            log.warning(
                "could not store filtered index %s of %s in the database (%s); serving it anyway",
                digest,
                manifest.repository,
                _describe(exc),
            )
        self._remember(key, record)

    async def _insert(self, digest: str, record: _Record) -> None:
        manifest = record.manifest
        if self.writer is not None:
            values = (
                digest,
                manifest.repository,
                manifest.media_type,
                manifest.content,
                record.machine_type,
                record.upstream_digest,
            )
            await self.writer.insert(_SQLITE_INSERT, values)
            return
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(filtered_manifests).values(
                    digest=digest,
                    repository=manifest.repository,
                    media_type=manifest.media_type,
                    content=manifest.content,
                    machine_type=record.machine_type,
                    upstream_digest=record.upstream_digest,
                    last_served=func.now(),
                )
            )

    def mark_served(self, key: tuple[str, str], record: _Record | None = None) -> None:
        """Note that (repository, digest) was served: dated in the database at the next flush.
        Nothing to do without retention."""
        if self.retention is None:
            return
        if key in self._served:
            if record is not None:
                self._served[key] = record
        elif len(self._served) < MAX_PENDING_MARKS:
            self._served[key] = record if record is not None else self._known(key)

    def mark_served_filtered(
        self,
        digest: str,
        manifest: StoredManifest,
        *,
        machine_type: str,
        upstream_digest: str,
    ) -> None:
        """A filtered index served from a cache above this store (a warm pull by tag)."""
        if self.retention is not None:
            key = (manifest.repository, digest)
            self.mark_served(key, _Record(manifest, machine_type, upstream_digest))

    def _known(self, key: tuple[str, str]) -> _Record | None:
        return self._memory.get(key)

    async def close(self) -> None:
        """Close what the store holds beside the engine (the engine is the caller's)."""
        if self.writer is not None:
            await self.writer.close()

    async def flush_served(self) -> int:
        """Date every row served since the last flush in one transaction; write back the ones
        pruned meanwhile that this process still holds. Returns how many rows were dated."""
        pending, self._served = self._served, {}
        if not pending:
            return 0
        lost: list[tuple[str, _Record]] = []
        dated = 0
        try:
            async with self._engine.begin() as connection:
                for (repository, digest), record in pending.items():
                    result = await connection.execute(
                        update(filtered_manifests)
                        .where(
                            filtered_manifests.c.digest == digest,
                            filtered_manifests.c.repository == repository,
                        )
                        .values(last_served=func.now())
                    )
                    dated += result.rowcount
                    if result.rowcount == 0 and record is not None:
                        lost.append((digest, record))
        except DATABASE_TROUBLE as exc:
            log.warning(
                "could not record when %d filtered indexes were served (%s); trying again later",
                len(pending),
                _describe(exc),
            )
            for key, record in pending.items():
                if key not in self._served and len(self._served) < MAX_PENDING_MARKS:
                    self._served[key] = record
            return 0
        for digest, record in lost:
            try:
                await self._insert(digest, record)
            except IntegrityError:
                pass  # written back by another process first
            except DATABASE_TROUBLE as exc:
                log.warning("could not write back filtered index %s (%s)", digest, _describe(exc))
        return dated

    async def prune(self, now: datetime | None = None) -> int:
        """Delete the rows not served within the retention; returns how many went."""
        if self.retention is None:
            return 0
        cutoff = (now or datetime.now(UTC)) - self.retention
        served = func.coalesce(filtered_manifests.c.last_served, filtered_manifests.c.created)
        try:
            async with self._engine.begin() as connection:
                rows = (
                    await connection.execute(
                        delete(filtered_manifests)
                        .where(served < cutoff)
                        .returning(filtered_manifests.c.repository, filtered_manifests.c.digest)
                    )
                ).all()
        except DATABASE_TROUBLE as exc:
            log.warning("could not prune the filtered-digest store (%s)", _describe(exc))
            return 0
        for repository, digest in rows:
            # Not served here for the whole retention either: forget it, as the database did.
            self._memory.pop((repository, digest), None)
        if rows:
            log.info("pruned %d filtered indexes not served for %s", len(rows), self.retention)
        return len(rows)

    async def retain_forever(self, interval: float) -> None:
        """Flush the served marks and prune, every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.flush_served()
            await self.prune()

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
        if found is None:
            return None
        self._memory.move_to_end(key)
        return found.manifest

    def known_upstream(self, repository: str, digest: str) -> bool:
        """Whether get would answer None from memory: a digest the upstream itself serves."""
        return (repository, digest) in self._upstream

    async def get(self, repository: str, digest: str) -> StoredManifest | None:
        key = (repository, digest)
        found = self._memory.get(key)
        if found is not None:
            self._memory.move_to_end(key)
            self.mark_served(key, found)
            return found.manifest
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
                            filtered_manifests.c.machine_type,
                            filtered_manifests.c.upstream_digest,
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
        record = _Record(manifest, row.machine_type, row.upstream_digest)
        self._remember(key, record)
        self.mark_served(key, record)
        return manifest

    def _remember(self, key: tuple[str, str], record: _Record) -> None:
        self._memory[key] = record
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
