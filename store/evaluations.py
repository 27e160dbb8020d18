"""Each finished run's per-class evaluation of its test set: written once by the worker, read
by the API."""

from sqlalchemy import Engine
from sqlmodel import Session

from store.db import session_scope
from store.tables import Evaluation


def save_evaluation(engine: Engine, evaluation: Evaluation) -> None:
    """Store ``evaluation``, replacing one a retried attempt of the run stored before."""
    with session_scope(engine) as session:
        session.merge(evaluation)


def evaluation_of(session: Session, *, experiment_id: str) -> Evaluation | None:
    """The experiment's evaluation, or None until its run has ended well."""
    return session.get(Evaluation, experiment_id)
