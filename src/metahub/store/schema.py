"""Tables. Migrations (store/migrations) are the source of truth for existing databases; this
module describes the newest revision for queries and tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
)

metadata = MetaData()


def _secret_lifetime() -> tuple[Column[Any], ...]:
    """When a login or admin token was made, stops working and was revoked (fresh per table)."""
    return (
        Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("expires", DateTime(timezone=True), nullable=True),
        Column("revoked", DateTime(timezone=True), nullable=True),
    )


# Filtered indexes MetaHub made, by their own digest: clients (containerd first of all) resolve a
# tag with HEAD and then GET by digest, possibly from another replica or after a restart.
filtered_manifests = Table(
    "filtered_manifests",
    metadata,
    Column("digest", String(150), primary_key=True),
    # Part of the key: access is per repository, and two repositories can share an index.
    Column("repository", String(255), primary_key=True),
    Column("media_type", String(255), nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("machine_type", String(255), nullable=False),
    Column("upstream_digest", String(150), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Updated in batches as it is served (store/digests.py); retention prunes by it.
    Column("last_served", DateTime(timezone=True), nullable=True),
)

machine_types = Table(
    "machine_types",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("features", JSON, nullable=False),
    Column("mode", String(16), nullable=False),
    Column("platforms", JSON, nullable=False),
    # `registry/repository` patterns it may pull; an empty list: every repository.
    Column("repositories", JSON, nullable=False),
    Column("description", Text, nullable=False),
    # Bumped on every change; part of every cache key for what the type is served.
    Column("revision", Integer, nullable=False),
    Column("config_managed", Boolean, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

credentials = Table(
    "credentials",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "machine_type",
        String(255),
        ForeignKey("machine_types.name", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("login", String(255), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("config_managed", Boolean, nullable=False),
    *_secret_lifetime(),
)

admins = Table(
    "admins",
    metadata,
    Column("login", String(255), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("admin", String(255), ForeignKey("admins.login", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    # Only a hash: a database dump must not hand out working tokens.
    Column("token_sha256", String(64), nullable=False, unique=True),
    *_secret_lifetime(),
)

# Shared by replicas: a token issued by one is verified by every other.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", LargeBinary, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(255), nullable=False),
    Column("detail", JSON, nullable=False),
)
