"""What the lab's daily loop needs: tags and notes, a parent for reruns and continues, a
pause request, and each finished run's per-class evaluation.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 23:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tags", sa.JSON(), server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("notes", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("parent_id", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("epoch_offset", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("pause_requested", sa.Boolean(), server_default="0", nullable=False)
        )
        batch_op.create_index(batch_op.f("ix_experiments_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "evaluations",
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("weights", sa.String(length=8), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("per_class_accuracy", sa.JSON(), nullable=False),
        sa.Column("confusion", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("experiment_id"),
    )


def downgrade() -> None:
    op.drop_table("evaluations")
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_experiments_parent_id"))
        batch_op.drop_column("pause_requested")
        batch_op.drop_column("epoch_offset")
        batch_op.drop_column("parent_id")
        batch_op.drop_column("notes")
        batch_op.drop_column("tags")
