"""The shared server and the spec beyond the chapter: priorities, pinned runs, one row per
attempt (its worker and accelerator), GPU readings in heartbeats, each epoch's learning rate.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 07:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.String(length=8), server_default="normal", nullable=False)
        )
        batch_op.add_column(
            sa.Column("pinned", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("convlab_studies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.String(length=8), server_default="normal", nullable=False)
        )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpu_utilization", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("gpu_memory_used_mb", sa.Integer(), nullable=True))
    with op.batch_alter_table("epochs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("learning_rate", sa.Float(), nullable=True))
    op.create_table(
        "attempts",
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("accelerator", sa.String(length=200), nullable=True),
        sa.Column("accelerator_memory_mb", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("experiment_id", "number"),
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_attempts_started_at"), ["started_at"])


def downgrade() -> None:
    op.drop_table("attempts")
    with op.batch_alter_table("epochs", schema=None) as batch_op:
        batch_op.drop_column("learning_rate")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("gpu_memory_used_mb")
        batch_op.drop_column("gpu_utilization")
    with op.batch_alter_table("convlab_studies", schema=None) as batch_op:
        batch_op.drop_column("priority")
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_column("pinned")
        batch_op.drop_column("priority")
