"""Machine types: the repositories they may pull (`registry/repository` patterns).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing types keep pulling everything: an empty list means every repository.
    with op.batch_alter_table("machine_types") as batch:
        batch.add_column(sa.Column("repositories", sa.JSON, nullable=True))
    table = sa.table("machine_types", sa.column("repositories", sa.JSON))
    op.execute(table.update().values(repositories=[]))
    with op.batch_alter_table("machine_types") as batch:
        batch.alter_column("repositories", existing_type=sa.JSON, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("machine_types") as batch:
        batch.drop_column("repositories")
