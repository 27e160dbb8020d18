"""Studies in the database: created with all their experiments at once, read as progress and
as the comparison table, cancelled as a whole."""

import contextlib
import uuid
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from models.epochs import EpochMetrics
from models.status import ACTIVE, Priority
from models.studies import PlannedRun
from models.study_state import first_within
from store import experiments, transitions
from store.db import session_scope
from store.experiments import METRIC_COLUMNS
from store.tables import EpochRecord, Experiment, Study


def create_study(
    session: Session,
    *,
    name: str | None,
    kind: str,
    definition: dict[str, Any],
    runs: list[PlannedRun],
    seeds: list[int],
    owner: str | None = None,
    priority: Priority = Priority.normal,
) -> tuple[Study, list[Experiment]]:
    """Store the study and every experiment of it (the caller commits once, then publishes)."""
    study = Study(
        id=uuid.uuid4().hex,
        name=name,
        kind=kind,
        definition=definition,
        seeds=seeds,
        owner=owner,
        priority=priority,
    )
    session.add(study)
    return study, _store_runs(session, study, runs)


def add_seeds(
    session: Session, study: Study, *, runs: list[PlannedRun], seeds: list[int]
) -> tuple[Study, list[Experiment]]:
    """Store the study's runs at its new ``seeds`` (its owner's, at its priority) and add the
    seeds to its own (the caller commits once, then publishes)."""
    study.seeds = [*study.seeds, *seeds]
    session.add(study)
    return study, _store_runs(session, study, runs)


def _store_runs(session: Session, study: Study, runs: list[PlannedRun]) -> list[Experiment]:
    """Store ``runs`` as experiments of ``study``, its owner's, at its priority."""
    return [
        experiments.create_experiment(
            session,
            name=run.name,
            spec=run.spec.model_dump(mode="json"),
            study_id=study.id,
            variant=run.variant,
            owner=study.owner,
            priority=study.priority,
        )
        for run in runs
    ]


def create_search_study(
    session: Session,
    *,
    name: str | None,
    definition: dict[str, Any],
    seeds: list[int],
    owner: str | None = None,
    priority: Priority = Priority.normal,
) -> Study:
    """Store a search study; its trials become experiments as the search asks for them."""
    study = Study(
        id=uuid.uuid4().hex,
        name=name,
        kind="search",
        definition=definition,
        seeds=seeds,
        owner=owner,
        priority=priority,
    )
    session.add(study)
    return study


def study_experiments(session: Session, study_id: str) -> list[Experiment]:
    query = select(Experiment).where(Experiment.study_id == study_id)
    return list(session.exec(query.order_by(col(Experiment.created_at), col(Experiment.id))))


def study_with_epochs(
    engine: Engine, study_id: str, *, after: int
) -> tuple[Study, list[Experiment], list[tuple[int, str, EpochMetrics]]] | None:
    """The study, its experiments, then its epoch rows numbered after ``after`` as (study_seq,
    experiment id, metrics) in that order, read in that order in one short session (a finished
    state comes with every row); None once it is gone."""
    with session_scope(engine) as session:
        study = session.get(Study, study_id)
        if study is None:
            return None
        members = study_experiments(session, study_id)
        epochs: list[tuple[int, str, EpochMetrics]] = []
        if study.epoch_seq > after:
            ids = select(Experiment.id).where(Experiment.study_id == study_id)
            rows = session.exec(
                select(EpochRecord.study_seq, EpochRecord.experiment_id, *METRIC_COLUMNS)
                .where(col(EpochRecord.experiment_id).in_(ids))
                .where(col(EpochRecord.study_seq) > after)
                .order_by(col(EpochRecord.study_seq))
            )
            epochs = [(seq, key, EpochMetrics(*values)) for seq, key, *values in rows]
        return study, members, epochs


def seconds_per_epoch(session: Session, ids: list[str]) -> dict[str, float]:
    """Each experiment's mean seconds per recorded epoch (those with epochs)."""
    averages = session.exec(
        select(EpochRecord.experiment_id, func.avg(EpochRecord.seconds))
        .where(col(EpochRecord.experiment_id).in_(ids))
        .group_by(col(EpochRecord.experiment_id))
    ).all()
    return {experiment_id: float(mean) for experiment_id, mean in averages}


def cancel_study(session: Session, study: Study) -> None:
    """Cancel every experiment of the study that may still run."""
    study.cancel_requested = True
    session.add(study)
    session.commit()
    for experiment in study_experiments(session, study.id):
        if experiment.status in ACTIVE:
            with contextlib.suppress(experiments.Conflict):  # it finished in the meantime
                transitions.cancel(session, experiment)


MAX_PAGE_EXPERIMENTS = 1000
"""A page of studies ends before the study that would take its studies' experiments past this
(it holds one study at least): each study of a page is read with all its experiments."""


def list_studies(
    session: Session, *, owner: str | None = None, limit: int, cursor: str | None
) -> tuple[list[Study], str | None]:
    """A page of studies (of ``owner`` if given), newest first, and the next page's cursor;
    fewer than ``limit`` when they would hold over ``MAX_PAGE_EXPERIMENTS`` experiments."""
    query = select(Study) if owner is None else select(Study).where(Study.owner == owner)
    page, next_cursor = experiments.newest_first(session, query, Study, limit=limit, cursor=cursor)
    sizes = _sizes(session, [study.id for study in page])
    kept = first_within([(study, sizes.get(study.id, 0)) for study in page], MAX_PAGE_EXPERIMENTS)
    if len(kept) == len(page):
        return page, next_cursor
    return kept, experiments.encode_cursor(kept[-1].created_at, kept[-1].id)


def _sizes(session: Session, study_ids: list[str]) -> dict[str, int]:
    """How many experiments each study has (those with any)."""
    counts = session.exec(
        select(Experiment.study_id, func.count())
        .where(col(Experiment.study_id).in_(study_ids))
        .group_by(col(Experiment.study_id))
    ).all()
    return {study_id: count for study_id, count in counts if study_id is not None}
