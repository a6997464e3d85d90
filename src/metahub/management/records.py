"""What the management service returns: plain records, serialisable as they are."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class MachineType:
    name: str
    features: list[str]
    mode: str
    platforms: list[str]
    repositories: list[str]  # `registry/repository` patterns; empty: every repository
    description: str
    revision: int
    config_managed: bool
    credentials: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Credential:
    id: str
    machine_type: str
    login: str
    config_managed: bool
    created: datetime | None
    expires: datetime | None
    revoked: datetime | None

    @property
    def active(self) -> bool:
        now = datetime.now(UTC)
        return self.revoked is None and (self.expires is None or aware(self.expires) > now)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("created", "expires", "revoked"):
            data[key] = _iso(data[key])
        data["active"] = self.active
        return data


@dataclass(frozen=True, slots=True)
class IssuedSecret:
    """A credential or token together with its secret, which is shown exactly once."""

    id: str
    login: str
    secret: str


@dataclass(frozen=True, slots=True)
class AdminToken:
    id: str
    admin: str
    name: str
    created: datetime | None
    expires: datetime | None
    revoked: datetime | None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("created", "expires", "revoked"):
            data[key] = _iso(data[key])
        return data


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime | None
    actor: str
    action: str
    target: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = _iso(data["at"])
        return data


@dataclass(frozen=True, slots=True)
class Change:
    """A committed change, named as its audit entry is: `credential.revoke` of `ci-1`."""

    action: str
    target: str

    @property
    def subject(self) -> str:
        """What changed: `machine_type`, `credential`, `admin`, `admin_token` or `config`."""
        return self.action.partition(".")[0]


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; MetaHub writes UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def utc(value: datetime) -> datetime:
    """A time to store: UTC, since SQLite keeps no offset (naive times are taken as UTC)."""
    return aware(value).astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return aware(value).isoformat() if value is not None else None
