"""Slots: each training process's slot in its worker, its worker's slot count and its share of
the GPU's memory, as its heartbeat reports them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slot", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("slots", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("gpu_memory_limit_mb", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("gpu_memory_limit_mb")
        batch_op.drop_column("slots")
        batch_op.drop_column("slot")
