"""Verification reruns: which run a rerun verifies, what judging it reads, and the verdict
recorded on both runs (``jobs.verdict`` compares, ``jobs.verify`` ties the two together)."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from models.epochs import EpochMetrics
from models.status import Status
from store.db import session_scope
from store.experiments import Conflict, history
from store.tables import Attempt, Experiment


def check_verifiable(experiment: Experiment) -> None:
    """Conflict unless the experiment succeeded and trained from its first epoch."""
    if experiment.status != Status.succeeded:
        raise Conflict(
            f"Experiment {experiment.id} is {experiment.status}; only a succeeded experiment can "
            "be verified: its rerun is compared with its history epoch by epoch."
        )
    if experiment.epoch_offset:
        raise Conflict(
            f"Experiment {experiment.id} continues {experiment.parent_id} after epoch "
            f"{experiment.epoch_offset}, so a rerun from scratch cannot repeat it; verify the "
            "experiment it continues instead."
        )


def mark_verification(session: Session, rerun_id: str, original_id: str) -> None:
    """Record that ``rerun_id`` verifies ``original_id`` (the caller commits)."""
    session.exec(
        update(Experiment).where(col(Experiment.id) == rerun_id).values(verifies_id=original_id)
    )


@dataclass(frozen=True)
class Verification:
    """What judging a finished verification rerun compares, each as (original, rerun)."""

    ids: tuple[str, str]
    histories: tuple[list[EpochMetrics], list[EpochMetrics]]
    environments: tuple[dict[str, Any] | None, dict[str, Any] | None]
    """Of the attempt that ended each run (None where it was not recorded)."""


def verification(engine: Engine, rerun_id: str) -> Verification | None:
    """A succeeded verification rerun still without its verdict, with what judging it needs;
    None for any other run (or once its original is deleted)."""
    with session_scope(engine) as session:
        rerun = session.get(Experiment, rerun_id)
        if (
            rerun is None
            or rerun.verifies_id is None
            or rerun.verdict is not None
            or rerun.status != Status.succeeded
            or session.get(Experiment, rerun.verifies_id) is None
        ):
            return None
        ids = (rerun.verifies_id, rerun.id)
        return Verification(
            ids=ids,
            histories=(history(session, ids[0]), history(session, ids[1])),
            environments=(_last_environment(session, ids[0]), _last_environment(session, ids[1])),
        )


def unjudged(engine: Engine) -> list[str]:
    """Succeeded verification reruns whose original is there and no verdict is recorded yet."""
    with session_scope(engine) as session:
        originals = select(Experiment.id)
        return list(
            session.exec(
                select(Experiment.id).where(
                    col(Experiment.verifies_id).in_(originals),
                    col(Experiment.verdict).is_(None),
                    col(Experiment.status) == Status.succeeded,
                )
            ).all()
        )


def record_verdict(engine: Engine, ids: tuple[str, str], verdict: dict[str, Any]) -> None:
    """Store the verdict on both runs, ``ids`` (original, rerun); the original keeps the newest
    of its verifications'."""
    with session_scope(engine) as session:
        session.exec(update(Experiment).where(col(Experiment.id).in_(ids)).values(verdict=verdict))


def _last_environment(session: Session, experiment_id: str) -> dict[str, Any] | None:
    environment = session.exec(
        select(Attempt.environment)
        .where(Attempt.experiment_id == experiment_id)
        .order_by(col(Attempt.number).desc())
        .limit(1)
    ).first()
    return None if environment is None else dict(environment)
