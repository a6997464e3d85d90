"""Tables. Kept in one place so migrations have one source of truth."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, LargeBinary, MetaData, String, Table, func

metadata = MetaData()

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
)
