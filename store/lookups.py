"""Rows by id: what the API reads to answer 404 or to name an experiment or study."""

from sqlalchemy import bindparam
from sqlmodel import Session, select

from store.tables import Experiment, Status, Study

_STATUS_AND_OWNER = select(Experiment.status, Experiment.owner).where(
    Experiment.id == bindparam("experiment_id")
)
"""Built once: SQLAlchemy then finds its compiled form without working out a cache key."""


def experiment_by_id(session: Session, *, experiment_id: str) -> Experiment | None:
    """The experiment with this id, or None."""
    return session.get(Experiment, experiment_id)


def status_and_owner(session: Session, *, experiment_id: str) -> tuple[Status, str | None] | None:
    """The experiment's status and owner, one row's two columns read without the ORM, or None."""
    row = session.connection().execute(_STATUS_AND_OWNER, {"experiment_id": experiment_id}).first()
    return None if row is None else (Status(row.status), row.owner)


def study_by_id(session: Session, *, study_id: str) -> Study | None:
    """The study with this id, or None."""
    return session.get(Study, study_id)
