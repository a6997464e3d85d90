"""The filtered-digest store, as the first MetaHub release made it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "filtered_manifests",
        sa.Column("digest", sa.String(150), primary_key=True),
        sa.Column("repository", sa.String(255), primary_key=True),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("machine_type", sa.String(255), nullable=False),
        sa.Column("upstream_digest", sa.String(150), nullable=False),
        sa.Column(
            "created", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("filtered_manifests")
