"""Management: machine types, credentials, admins and their tokens, signing keys, audit log.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _created() -> sa.Column[object]:
    return sa.Column(
        "created", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


def upgrade() -> None:
    op.create_table(
        "machine_types",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("platforms", sa.JSON, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("config_managed", sa.Boolean, nullable=False),
        _created(),
        sa.Column(
            "updated", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "machine_type",
            sa.String(255),
            sa.ForeignKey("machine_types.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("login", sa.String(255), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("config_managed", sa.Boolean, nullable=False),
        _created(),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_credentials_machine_type", "credentials", ["machine_type"])
    op.create_table(
        "admins",
        sa.Column("login", sa.String(255), primary_key=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        _created(),
    )
    op.create_table(
        "admin_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "admin",
            sa.String(255),
            sa.ForeignKey("admins.login", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        _created(),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "signing_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.LargeBinary, nullable=False),
        _created(),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("audit_log", "signing_keys", "admin_tokens", "admins", "credentials"):
        op.drop_table(table)
    op.drop_table("machine_types")
