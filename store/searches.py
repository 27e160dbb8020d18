"""A search study's rows: its trials stored as experiments (one per seed), counted under the
study's row lock, and the values Optuna is told."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, distinct, func, update
from sqlmodel import Session, col, select

from models.status import ACTIVE
from store.db import session_scope
from store.experiments import create_experiment
from store.studies import study_experiments
from store.tables import EpochRecord, Experiment, Study
from store.transitions import fail_refused


def searches(engine: Engine) -> list[Study]:
    """Every search study."""
    with session_scope(engine) as session:
        return list(session.exec(select(Study).where(Study.kind == "search")).all())


def search_study(engine: Engine, study_id: str) -> Study | None:
    """The study with this id if it is a search."""
    with session_scope(engine) as session:
        study = session.get(Study, study_id)
    return study if study is not None and study.kind == "search" else None


def search_with_trials(engine: Engine, study_id: str) -> tuple[Study, list[Experiment]] | None:
    """The search study and its experiments, oldest first; None if it is not a search."""
    with session_scope(engine) as session:
        study = session.get(Study, study_id)
        if study is None or study.kind != "search":
            return None
        return study, study_experiments(session, study_id)


def best_metric(engine: Engine, experiment_id: str, metric: str) -> float | None:
    """The run's best epoch value of ``metric`` (highest accuracy, lowest loss)."""
    column = col(getattr(EpochRecord, metric))
    best = func.max(column) if metric == "val_accuracy" else func.min(column)
    with session_scope(engine) as session:
        value = session.exec(select(best).where(EpochRecord.experiment_id == experiment_id)).one()
    return None if value is None else float(value)


def experiment_count(engine: Engine, study_id: str) -> int:
    """How many experiments the study has stored."""
    with session_scope(engine) as session:
        return session.exec(select(func.count()).where(Experiment.study_id == study_id)).one()


@dataclass(frozen=True)
class TrialRun:
    """One run (one seed) of a trial, as it is to be stored."""

    name: str
    spec: dict[str, Any]


def store_trial(
    engine: Engine,
    study: Study,
    *,
    number: int,
    runs: list[TrialRun],
    n_trials: int,
    parallel: int,
    refusal: str | None,
) -> list[Experiment]:
    """Count one more trial and store its runs, in one transaction: queued (not yet published),
    or failed for ``refusal``. None stored (empty) when the search already has ``n_trials``
    trials, was cancelled or runs ``parallel`` trials."""
    stored: list[Experiment] = []
    with session_scope(engine) as session:
        if not _count_trial(session, study.id, n_trials=n_trials, parallel=parallel):
            return stored
        for run in runs:
            experiment = create_experiment(
                session,
                name=run.name,
                spec=run.spec,
                study_id=study.id,
                variant=f"trial {number}",
                owner=study.owner,
                priority=study.priority,
            )
            experiment.trial_number = number
            if refusal is not None:
                fail_refused(experiment, refusal)
            stored.append(experiment)
    return stored


def _count_trial(session: Session, study_id: str, *, n_trials: int, parallel: int) -> bool:
    """Count one more trial, unless the search has all its trials, was cancelled or already
    runs ``parallel`` trials (each with one run per seed). The count comes first and locks the
    study's row, so processes advancing the search at once (a worker and the sweeper) see each
    other's trials."""
    claimed = session.exec(
        update(Study)
        .where(
            col(Study.id) == study_id,
            col(Study.trials_started) < n_trials,
            col(Study.cancel_requested).is_(False),
        )
        .values(trials_started=col(Study.trials_started) + 1)
    )
    if claimed.rowcount != 1:
        return False
    active = session.exec(
        select(func.count(distinct(col(Experiment.trial_number)))).where(
            Experiment.study_id == study_id, col(Experiment.status).in_(ACTIVE)
        )
    ).one()
    if active < parallel:
        return True
    session.exec(
        update(Study)
        .where(col(Study.id) == study_id)
        .values(trials_started=col(Study.trials_started) - 1)
    )
    return False
