"""Each finished run's per-class evaluation of its test set: written once by the worker
(``store.runs.save_evaluation``), read by the API."""

from sqlmodel import Session

from store.tables import Evaluation


def evaluation_of(session: Session, *, experiment_id: str) -> Evaluation | None:
    """The experiment's evaluation, or None until its run has ended well."""
    return session.get(Evaluation, experiment_id)
