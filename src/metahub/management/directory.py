"""Machine types and credentials as the hot path sees them: in memory, refreshed from the DB.

A warm pull never waits on the database. Every `refresh_interval` seconds the directory reloads
both tables (small: hundreds of rows), so a credential revoked or a type changed through any
replica takes effect everywhere within that interval; a change made through this process's
management service reloads it at once (`changed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from metahub.auth.passwords import Account
from metahub.config import MachineTypeConfig
from metahub.features.selection import MachineProfile
from metahub.management.ids import config_credential_id
from metahub.management.records import Change, aware
from metahub.store.schema import credentials, machine_types

log = logging.getLogger("metahub.directory")
# Changes to these reach the hot path; admins and their tokens are not kept here.
_KEPT = frozenset({"machine_type", "credential", "config"})


class Directory:
    def __init__(self, engine: AsyncEngine, configured: Iterable[MachineTypeConfig]) -> None:
        self._engine = engine
        # Config credentials are checked against the config itself: its passwords may be plain.
        self._configured = {
            m.login: Account(
                m.login, m.name, m.password, m.password_hash, config_credential_id(m.login)
            )
            for m in configured
        }
        self._profiles: Mapping[str, MachineProfile] = {}
        self._accounts: dict[str, Account] = {}
        self._by_id: dict[str, Account] = {}
        self._tags: dict[str, str] = {}
        # One load at a time: two changes in quick succession each start a load, and the read
        # made after the second commit must be the one that stays.
        self._loading = asyncio.Lock()

    @property
    def profiles(self) -> Mapping[str, MachineProfile]:
        """The machine types by name, as last loaded; a load replaces the mapping whole."""
        return self._profiles

    def account(self, login: str) -> Account | None:
        return self._accounts.get(login)

    def credential_active(self, credential_id: str, secret_tag: str | None = None) -> bool:
        """The credential exists here, is live, and (given a tag) still has that secret."""
        account = self._by_id.get(credential_id)
        if account is None or not account.active:
            return False
        return secret_tag is None or self._tags.get(credential_id) == secret_tag

    async def load(self) -> None:
        async with self._loading:
            await self._load()

    async def _load(self) -> None:
        async with self._engine.connect() as connection:
            # Credentials first: a credential's machine type was committed before it (or with
            # it), so every credential read here finds its type in the second read, even while
            # another replica adds both between the two.
            creds = (
                await connection.execute(
                    select(credentials).where(
                        credentials.c.revoked.is_(None),
                        credentials.c.config_managed.is_(False),
                    )
                )
            ).all()
            types = (await connection.execute(select(machine_types))).all()
        profiles = {
            row.name: MachineProfile.of(
                row.name,
                row.features,
                mode=row.mode,
                platforms=row.platforms,
                repositories=row.repositories or (),
            )
            for row in types
        }
        accounts = {
            row.login: Account(
                row.login,
                row.machine_type,
                password_hash=row.password_hash,
                credential_id=row.id,
                expires=aware(row.expires) if row.expires is not None else None,
            )
            for row in creds
        }
        accounts.update(self._configured)
        # Each mapping is swapped whole: a reader sees the last load's or this one's, never a mix.
        self._profiles = profiles
        self._accounts = accounts
        self._by_id = {a.credential_id: a for a in accounts.values() if a.credential_id}
        self._tags = {cid: account.secret_tag for cid, account in self._by_id.items()}

    async def changed(self, change: Change) -> None:
        """A management change has committed: reload if it touched what is kept here."""
        if change.subject in _KEPT:
            await self.load()

    async def refresh_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.load()
            except Exception:
                log.exception("could not refresh machine types and credentials; keeping the last")
