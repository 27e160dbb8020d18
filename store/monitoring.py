"""What the server's own checks read: the ping behind /ready, and the experiment counts and
epoch rows behind /metrics."""

from datetime import datetime

from sqlalchemy import func, text
from sqlmodel import Session, col, select

from models.status import Status
from store.tables import EpochRecord, Experiment


def ping(session: Session) -> None:
    """Run ``SELECT 1``; raises when the database does not answer."""
    session.connection().execute(text("SELECT 1"))


def experiments_by_status(session: Session) -> dict[str, int]:
    """How many experiments are in each status (a status with none is absent)."""
    rows = session.exec(
        select(Experiment.status, func.count()).group_by(col(Experiment.status))
    ).all()
    return {str(status): int(count) for status, count in rows}


def queued_by_priority(session: Session) -> dict[str, int]:
    """How many experiments wait at each priority (a priority with none is absent)."""
    rows = session.exec(
        select(Experiment.priority, func.count())
        .where(col(Experiment.status) == Status.queued)
        .group_by(col(Experiment.priority))
    ).all()
    return {str(priority): int(count) for priority, count in rows}


def epochs_recorded_after(session: Session, *, after: datetime) -> list[EpochRecord]:
    """The epoch rows recorded after ``after``."""
    return list(session.exec(select(EpochRecord).where(col(EpochRecord.recorded_at) > after)))
