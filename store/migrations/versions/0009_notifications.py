"""Notifications: the URL an experiment or study is announced to when it ends, and how the
delivery went (``jobs.notify``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 03:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("experiments", "convlab_studies")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("notify_url", sa.String(length=2048), nullable=True))
            batch_op.add_column(sa.Column("notify_state", sa.String(length=16), nullable=True))
            batch_op.add_column(
                sa.Column("notify_attempts", sa.Integer(), server_default="0", nullable=False)
            )
            batch_op.add_column(
                sa.Column("notify_next_at", sa.DateTime(timezone=True), nullable=True)
            )
            batch_op.add_column(sa.Column("notify_error", sa.Text(), nullable=True))
            batch_op.create_index(batch_op.f(f"ix_{table}_notify_state"), ["notify_state"])


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_notify_state"))
            for column in (
                "notify_error",
                "notify_next_at",
                "notify_attempts",
                "notify_state",
                "notify_url",
            ):
                batch_op.drop_column(column)
