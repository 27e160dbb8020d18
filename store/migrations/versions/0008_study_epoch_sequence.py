"""A study's epoch rows numbered in the order they commit, for its event stream's ids: each
epoch row of a study's experiment takes the study's next number under a lock on the study's
row, so a stream that resumes after number N gets every row committed after it. Rows already
there are numbered in the order they were recorded.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 02:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NUMBER_EXISTING_ROWS = """
UPDATE epochs SET study_seq = (
    SELECT numbered.seq FROM (
        SELECT e.experiment_id, e.epoch, ROW_NUMBER() OVER (
            PARTITION BY x.study_id ORDER BY e.recorded_at, e.experiment_id, e.epoch
        ) AS seq
        FROM epochs e JOIN experiments x ON x.id = e.experiment_id
        WHERE x.study_id IS NOT NULL
    ) AS numbered
    WHERE numbered.experiment_id = epochs.experiment_id AND numbered.epoch = epochs.epoch
)
WHERE experiment_id IN (SELECT id FROM experiments WHERE study_id IS NOT NULL)
"""
COUNT_THEM = """
UPDATE convlab_studies SET epoch_seq = COALESCE((
    SELECT MAX(e.study_seq) FROM epochs e JOIN experiments x ON x.id = e.experiment_id
    WHERE x.study_id = convlab_studies.id
), 0)
"""


def upgrade() -> None:
    with op.batch_alter_table("epochs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("study_seq", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_epochs_experiment_id_study_seq"),
            ["experiment_id", "study_seq"],
            unique=False,
        )
    with op.batch_alter_table("convlab_studies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("epoch_seq", sa.BigInteger(), server_default="0", nullable=False)
        )
    op.execute(NUMBER_EXISTING_ROWS)
    op.execute(COUNT_THEM)


def downgrade() -> None:
    with op.batch_alter_table("convlab_studies", schema=None) as batch_op:
        batch_op.drop_column("epoch_seq")
    with op.batch_alter_table("epochs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_epochs_experiment_id_study_seq"))
        batch_op.drop_column("study_seq")
