"""Trust in the numbers: the dataset a run trained on, verification reruns and their verdict,
each attempt's environment.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dataset", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("verifies_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("verdict", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_experiments_verifies_id"), ["verifies_id"])
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("environment", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_column("environment")
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_experiments_verifies_id"))
        batch_op.drop_column("verdict")
        batch_op.drop_column("verifies_id")
        batch_op.drop_column("dataset")
