"""Studies (groups of experiments compared side by side) and search trials.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 21:55:05.422810
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "convlab_studies",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("seeds", sa.JSON(), nullable=False),
        sa.Column("trials_started", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("convlab_studies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_convlab_studies_created_at"), ["created_at"], unique=False
        )

    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variant", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("trial_number", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_column("trial_number")
        batch_op.drop_column("variant")

    with op.batch_alter_table("convlab_studies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_convlab_studies_created_at"))

    op.drop_table("convlab_studies")
