"""Operations on machine types, credentials, admins and admin tokens, each audited.

Secrets are generated here and returned once (IssuedSecret); only argon2 hashes (passwords) and
sha256 hashes (admin tokens) are stored. Machine types from the YAML config are imported as
config-managed and cannot be changed through this service.

Each committed change is announced to the listeners given to `on_change`: a running server's
directory reloads, so a new credential pulls and a revoked one stops at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from metahub import errors
from metahub.auth.passwords import hash_password
from metahub.config import ConfigError, MachineTypeConfig
from metahub.features.model import Feature, InvalidFeature
from metahub.features.names import InvalidName, check_admin_login, check_login, check_name
from metahub.features.selection import MODES
from metahub.management.ids import config_credential_id
from metahub.management.records import (
    AdminToken,
    AuditEntry,
    Change,
    Credential,
    IssuedSecret,
    MachineType,
    aware,
    utc,
)
from metahub.oci.platform import InvalidPlatform, parse_platform
from metahub.oci.repository_patterns import InvalidPattern, compile_pattern
from metahub.store.locks import hold_startup_lock
from metahub.store.schema import admin_tokens, admins, audit_log, credentials, machine_types

TOKEN_PREFIX = "mha_"
# Called after a change has committed; what it raises reaches the caller of the change.
ChangeListener = Callable[[Change], Awaitable[None]]


def invalid(field: str, message: str) -> errors.RegistryError:
    return errors.InvalidRequest(
        f"{field}: {message}", detail=[{"field": field, "message": message}]
    )


def _now() -> datetime:
    return datetime.now(UTC)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ManagementService:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._listeners: list[ChangeListener] = []

    def on_change(self, listener: ChangeListener) -> None:
        """Have `listener` told of every change once it has committed (a server's directory)."""
        self._listeners.append(listener)

    async def _announce(self, change: Change) -> None:
        for listener in self._listeners:
            await listener(change)

    # -- machine types ---------------------------------------------------------------------

    async def list_machine_types(self) -> list[MachineType]:
        counts = (
            select(credentials.c.machine_type, func.count().label("n"))
            .where(credentials.c.revoked.is_(None))
            .group_by(credentials.c.machine_type)
            .subquery()
        )
        query = (
            select(machine_types, func.coalesce(counts.c.n, 0).label("n"))
            .outerjoin(counts, counts.c.machine_type == machine_types.c.name)
            .order_by(machine_types.c.name)
        )
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_machine_type(row, row.n) for row in rows]

    async def get_machine_type(self, name: str) -> MachineType:
        for machine_type in await self.list_machine_types():
            if machine_type.name == name:
                return machine_type
        raise errors.NotFound(f"machine type {name!r} does not exist", detail={"name": name})

    async def create_machine_type(
        self,
        actor: str,
        name: str,
        features: Sequence[str],
        *,
        mode: str = "best",
        platforms: Sequence[str] = (),
        repositories: Sequence[str] = (),
        description: str = "",
    ) -> MachineType:
        values = _validated(
            name=name,
            features=features,
            mode=mode,
            platforms=platforms,
            repositories=repositories,
        )
        try:
            async with self.engine.begin() as connection:
                await connection.execute(
                    insert(machine_types).values(
                        **values,
                        description=description,
                        revision=1,
                        config_managed=False,
                        created=_now(),
                        updated=_now(),
                    )
                )
                change = await _audit(connection, actor, "machine_type.create", name, values)
        except IntegrityError as exc:
            raise errors.Conflict(
                f"machine type {name!r} already exists", detail={"name": name}
            ) from exc
        await self._announce(change)
        return await self.get_machine_type(name)

    async def update_machine_type(
        self,
        actor: str,
        name: str,
        *,
        features: Sequence[str] | None = None,
        mode: str | None = None,
        platforms: Sequence[str] | None = None,
        repositories: Sequence[str] | None = None,
        description: str | None = None,
    ) -> MachineType:
        current = await self._editable(name)
        values = _validated(
            name=name,
            features=current.features if features is None else features,
            mode=current.mode if mode is None else mode,
            platforms=current.platforms if platforms is None else platforms,
            repositories=current.repositories if repositories is None else repositories,
        )
        del values["name"]
        if description is not None:
            values["description"] = description
        if all(getattr(current, key) == value for key, value in values.items()):
            return current  # nothing changes: no new revision (it would empty caches), no audit
        async with self.engine.begin() as connection:
            await connection.execute(
                update(machine_types)
                .where(machine_types.c.name == name)
                .values(**values, revision=machine_types.c.revision + 1, updated=_now())
            )
            change = await _audit(connection, actor, "machine_type.update", name, values)
        await self._announce(change)
        return await self.get_machine_type(name)

    async def delete_machine_type(self, actor: str, name: str) -> None:
        await self._editable(name)
        async with self.engine.begin() as connection:
            await connection.execute(delete(credentials).where(credentials.c.machine_type == name))
            await connection.execute(delete(machine_types).where(machine_types.c.name == name))
            change = await _audit(connection, actor, "machine_type.delete", name, {})
        await self._announce(change)

    async def _editable(self, name: str) -> MachineType:
        current = await self.get_machine_type(name)
        if current.config_managed:
            raise errors.Conflict(
                f"machine type {name!r} comes from the config file; change it there",
                detail={"name": name},
            )
        return current

    async def import_config(self, configured: Sequence[MachineTypeConfig]) -> None:
        """Make the config's machine types and logins rows, read-only through the API.

        Several workers or replicas may import at once; a lost insert race is retried once.
        """
        try:
            await self._import_config(configured)
        except IntegrityError:
            await self._import_config(configured)
        await self._announce(Change("config.import", "machine_types"))

    async def _import_config(self, configured: Sequence[MachineTypeConfig]) -> None:
        names = [entry.name for entry in configured]
        async with self.engine.begin() as connection:
            await hold_startup_lock(connection)  # one process at a time; the others find it done
            existing = {
                row.name: row for row in (await connection.execute(select(machine_types))).all()
            }
            for entry in configured:
                values = {
                    "features": list(entry.features),
                    "mode": entry.mode,
                    "platforms": list(entry.platforms),
                    "repositories": list(entry.repositories),
                    "description": entry.description,
                }
                row = existing.get(entry.name)
                if row is None:
                    await connection.execute(
                        insert(machine_types).values(
                            name=entry.name,
                            **values,
                            revision=1,
                            config_managed=True,
                            created=_now(),
                            updated=_now(),
                        )
                    )
                elif not row.config_managed or any(
                    getattr(row, key) != value for key, value in values.items()
                ):
                    await connection.execute(
                        update(machine_types)
                        .where(machine_types.c.name == entry.name)
                        .values(
                            **values,
                            config_managed=True,
                            updated=_now(),
                            revision=machine_types.c.revision + 1,
                        )
                    )
            # A type dropped from the config stays, editable, with its credentials.
            await connection.execute(
                update(machine_types)
                .where(machine_types.c.config_managed.is_(True))
                .where(machine_types.c.name.not_in(names))
                .values(config_managed=False, updated=_now())
            )
            # Config logins are listed like any credential; they are checked against the config.
            await connection.execute(
                delete(credentials).where(credentials.c.config_managed.is_(True))
            )
            await _refuse_taken_logins(connection, configured)
            for entry in configured:
                await connection.execute(
                    insert(credentials).values(
                        id=config_credential_id(entry.login),
                        machine_type=entry.name,
                        login=entry.login,
                        password_hash=entry.password_hash or "",
                        config_managed=True,
                        created=_now(),
                    )
                )

    # -- credentials -----------------------------------------------------------------------

    async def list_credentials(self, machine_type: str | None = None) -> list[Credential]:
        query = select(credentials).order_by(credentials.c.machine_type, credentials.c.login)
        if machine_type is not None:
            await self.get_machine_type(machine_type)
            query = query.where(credentials.c.machine_type == machine_type)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_credential(row) for row in rows]

    async def get_credential(self, credential_id: str) -> Credential:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(credentials).where(credentials.c.id == credential_id)
                )
            ).first()
        if row is None:
            raise errors.NotFound(
                f"credential {credential_id!r} does not exist", detail={"id": credential_id}
            )
        return _credential(row)

    async def create_credential(
        self,
        actor: str,
        machine_type: str,
        *,
        login: str | None = None,
        expires: datetime | None = None,
    ) -> IssuedSecret:
        await self.get_machine_type(machine_type)
        login = login or f"{machine_type}-{secrets.token_hex(4)}"
        _checked("login", check_login, login)
        expires = _future(expires)
        password = secrets.token_urlsafe(24)
        hashed = await asyncio.to_thread(hash_password, password)
        credential_id = secrets.token_hex(8)
        try:
            async with self.engine.begin() as connection:
                await connection.execute(
                    insert(credentials).values(
                        id=credential_id,
                        machine_type=machine_type,
                        login=login,
                        password_hash=hashed,
                        config_managed=False,
                        created=_now(),
                        expires=expires,
                    )
                )
                change = await _audit(
                    connection,
                    actor,
                    "credential.create",
                    login,
                    {"id": credential_id, "machine_type": machine_type},
                )
        except IntegrityError as exc:
            raise errors.Conflict(f"login {login!r} is taken", detail={"login": login}) from exc
        await self._announce(change)
        return IssuedSecret(credential_id, login, password)

    async def rotate_credential(self, actor: str, credential_id: str) -> IssuedSecret:
        credential = await self._changeable(credential_id)
        if credential.revoked is not None:
            raise errors.Conflict(
                f"credential {credential.login!r} is revoked; create a new one",
                detail={"id": credential_id},
            )
        password = secrets.token_urlsafe(24)
        hashed = await asyncio.to_thread(hash_password, password)
        async with self.engine.begin() as connection:
            await connection.execute(
                update(credentials)
                .where(credentials.c.id == credential_id)
                .values(password_hash=hashed)
            )
            change = await _audit(
                connection, actor, "credential.rotate", credential.login, {"id": credential_id}
            )
        await self._announce(change)
        return IssuedSecret(credential_id, credential.login, password)

    async def revoke_credential(self, actor: str, credential_id: str) -> Credential:
        credential = await self._changeable(credential_id)
        change = None
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(credentials)
                .where(credentials.c.id == credential_id, credentials.c.revoked.is_(None))
                .values(revoked=_now())
            )
            if result.rowcount:  # revoking twice changes nothing: not audited, not announced
                change = await _audit(
                    connection, actor, "credential.revoke", credential.login, {"id": credential_id}
                )
        if change is not None:
            await self._announce(change)
        return await self.get_credential(credential_id)

    async def expire_credential(self, actor: str, credential_id: str, when: datetime) -> Credential:
        credential = await self._changeable(credential_id)
        when = _stored_time(when, "at")
        async with self.engine.begin() as connection:
            await connection.execute(
                update(credentials).where(credentials.c.id == credential_id).values(expires=when)
            )
            change = await _audit(
                connection,
                actor,
                "credential.expire",
                credential.login,
                {"id": credential_id, "expires": aware(when).isoformat()},
            )
        await self._announce(change)
        return await self.get_credential(credential_id)

    async def _changeable(self, credential_id: str) -> Credential:
        credential = await self.get_credential(credential_id)
        if credential.config_managed:
            raise errors.Conflict(
                f"credential {credential.login!r} comes from the config file; change it there"
            )
        return credential

    # -- admins and their tokens -----------------------------------------------------------

    async def create_admin(self, actor: str, login: str, password: str) -> None:
        _checked("login", check_admin_login, login)
        if len(password) < 12:
            raise invalid("password", "use at least 12 characters")
        hashed = await asyncio.to_thread(hash_password, password)
        try:
            async with self.engine.begin() as connection:
                await connection.execute(
                    insert(admins).values(login=login, password_hash=hashed, created=_now())
                )
                change = await _audit(connection, actor, "admin.create", login, {})
        except IntegrityError as exc:
            raise errors.Conflict(
                f"admin {login!r} already exists", detail={"login": login}
            ) from exc
        await self._announce(change)

    async def list_admins(self) -> list[str]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(select(admins.c.login).order_by(admins.c.login))
            return [row.login for row in rows]

    async def admin_password_hash(self, login: str) -> str | None:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(admins.c.password_hash).where(admins.c.login == login)
                )
            ).first()
        return row.password_hash if row is not None else None

    async def _known_admin(self, login: str) -> None:
        if login not in await self.list_admins():
            raise errors.NotFound(f"admin {login!r} does not exist", detail={"admin": login})

    async def delete_admin(self, actor: str, login: str) -> None:
        async with self.engine.begin() as connection:
            result = await connection.execute(delete(admins).where(admins.c.login == login))
            if result.rowcount == 0:
                raise errors.NotFound(f"admin {login!r} does not exist")
            change = await _audit(connection, actor, "admin.delete", login, {})
        await self._announce(change)

    async def create_admin_token(
        self, actor: str, admin: str, name: str, *, expires: datetime | None = None
    ) -> IssuedSecret:
        await self._known_admin(admin)
        expires = _future(expires)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(8)
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(admin_tokens).values(
                    id=token_id,
                    admin=admin,
                    name=name or "token",
                    token_sha256=token_hash(token),
                    created=_now(),
                    expires=expires,
                )
            )
            change = await _audit(
                connection, actor, "admin_token.create", admin, {"id": token_id, "name": name}
            )
        await self._announce(change)
        return IssuedSecret(token_id, admin, token)

    async def list_admin_tokens(self, admin: str | None = None) -> list[AdminToken]:
        query = select(admin_tokens).order_by(admin_tokens.c.created)
        if admin is not None:
            await self._known_admin(admin)
            query = query.where(admin_tokens.c.admin == admin)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [AdminToken(r.id, r.admin, r.name, r.created, r.expires, r.revoked) for r in rows]

    async def revoke_admin_token(self, actor: str, token_id: str) -> None:
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(admin_tokens)
                .where(admin_tokens.c.id == token_id, admin_tokens.c.revoked.is_(None))
                .values(revoked=_now())
            )
            if result.rowcount == 0:
                raise errors.NotFound(f"no active admin token {token_id!r}")
            change = await _audit(connection, actor, "admin_token.revoke", token_id, {})
        await self._announce(change)

    async def admin_for_token(self, token: str) -> str | None:
        """The admin a token speaks for, if it is live."""
        return await self._live_token_admin(admin_tokens.c.token_sha256 == token_hash(token))

    async def admin_for_token_id(self, token_id: str) -> str | None:
        """The admin whose token `token_id` is, if it is live (the web UI's session check)."""
        return await self._live_token_admin(admin_tokens.c.id == token_id)

    async def _live_token_admin(self, which: Any) -> str | None:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(admin_tokens.c.admin, admin_tokens.c.expires).where(
                        which, admin_tokens.c.revoked.is_(None)
                    )
                )
            ).first()
        if row is None or (row.expires is not None and aware(row.expires) <= _now()):
            return None
        return str(row.admin)

    # -- audit -------------------------------------------------------------------------------

    async def audit(self, *, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(audit_log.c.id < before)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [AuditEntry(r.id, r.at, r.actor, r.action, r.target, r.detail) for r in rows]


async def _audit(
    connection: AsyncConnection, actor: str, action: str, target: str, detail: dict[str, Any]
) -> Change:
    """Log a change in its transaction; the Change returned is announced once that commits."""
    await connection.execute(
        insert(audit_log).values(
            at=_now(), actor=actor, action=action, target=target, detail=detail
        )
    )
    return Change(action, target)


async def _refuse_taken_logins(
    connection: AsyncConnection, configured: Sequence[MachineTypeConfig]
) -> None:
    """A config login that a credential made in the database already has (revoked ones too:
    a login is never reused) would end as a unique-constraint error; say what to change."""
    wanted = {entry.login: entry.name for entry in configured}
    if not wanted:
        return
    taken = (
        await connection.execute(
            select(credentials.c.login, credentials.c.machine_type)
            .where(credentials.c.login.in_(list(wanted)))
            .order_by(credentials.c.login)
        )
    ).all()
    if taken:
        clashes = "; ".join(
            f"login {row.login!r} of {wanted[row.login]!r} is a credential of machine type "
            f"{row.machine_type!r} in the database"
            for row in taken
        )
        raise ConfigError(f"machine_types: {clashes}: give the config another login")


def _stored_time(value: datetime, field: str) -> datetime:
    try:
        return utc(value)
    except OverflowError as exc:  # 9999-12-31T23:00-05:00 is after the last datetime in UTC
        raise invalid(field, "out of range") from exc


def _future(expires: datetime | None) -> datetime | None:
    """An expiry as aware UTC; one already past is refused (expire a credential instead)."""
    if expires is None:
        return None
    expires = _stored_time(expires, "expires")
    if expires <= _now():
        raise invalid("expires", "must be in the future")
    return expires


def _validated(
    *,
    name: str,
    features: Sequence[str],
    mode: str,
    platforms: Sequence[str],
    repositories: Sequence[str],
) -> dict[str, Any]:
    _checked("name", check_name, name)
    for position, text in enumerate(features):
        try:
            Feature.parse(text)
        except InvalidFeature as exc:
            raise invalid(f"features.{position}", str(exc)) from exc
    if mode not in MODES:
        raise invalid("mode", f"must be one of {', '.join(MODES)}")
    for position, text in enumerate(platforms):
        try:
            parse_platform(text)
        except InvalidPlatform as exc:
            raise invalid(f"platforms.{position}", str(exc)) from exc
    for position, text in enumerate(repositories):
        try:
            compile_pattern(text)
        except InvalidPattern as exc:
            raise invalid(f"repositories.{position}", str(exc)) from exc
    return {
        "name": name,
        "features": list(features),
        "mode": mode,
        "platforms": list(platforms),
        "repositories": list(repositories),
    }


def _checked(field: str, check: Callable[[str], str], value: str) -> None:
    try:
        check(value)
    except InvalidName as exc:
        raise invalid(field, str(exc)) from exc


def _machine_type(row: Any, count: int) -> MachineType:
    return MachineType(
        name=row.name,
        features=list(row.features),
        mode=row.mode,
        platforms=list(row.platforms),
        repositories=list(row.repositories or ()),
        description=row.description,
        revision=row.revision,
        config_managed=bool(row.config_managed),
        credentials=int(count),
    )


def _credential(row: Any) -> Credential:
    return Credential(
        row.id,
        row.machine_type,
        row.login,
        bool(row.config_managed),
        row.created,
        row.expires,
        row.revoked,
    )
