"""Preemption: how often a run gave its worker up, whether it is asked to, and whether a
waiting run has asked one to.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 16:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("preemptions", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("yield_requested", sa.Boolean(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("preempt_asked", sa.Boolean(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_column("preempt_asked")
        batch_op.drop_column("yield_requested")
        batch_op.drop_column("preemptions")
