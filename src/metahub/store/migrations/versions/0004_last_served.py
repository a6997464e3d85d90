"""When each filtered index was last served, so that retention can prune the ones no longer
pulled (`database.filtered_retention_days`).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and without a default: SQLite cannot add a column whose default is the time.
    # MetaHub writes it on every insert; rows made before are dated by their creation.
    with op.batch_alter_table("filtered_manifests") as batch:
        batch.add_column(sa.Column("last_served", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE filtered_manifests SET last_served = created")


def downgrade() -> None:
    with op.batch_alter_table("filtered_manifests") as batch:
        batch.drop_column("last_served")
