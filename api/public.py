"""Experiments as the API shows them: the row, plus what other rows tell about it (its place
in the queue, its attempts and what each ran with)."""

from api.schemas import AcceleratorPublic, AttemptPublic, EnvironmentPublic, ExperimentPublic
from core.config import Settings
from jobs.forecast import served_places
from models.status import Status
from store.db import Session
from store.tables import Attempt, Experiment
from store.workers import attempts_of


def experiment_public(session: Session, settings: Settings, row: Experiment) -> ExperimentPublic:
    """One experiment for an answer."""
    return experiments_public(session, settings, [row])[0]


def experiments_public(
    session: Session, settings: Settings, rows: list[Experiment]
) -> list[ExperimentPublic]:
    """Experiments for an answer; the queue's places are read only if one of them waits, from
    the forecast this process last made (``jobs.forecast.Forecasts``)."""
    waiting = [row.id for row in rows if row.status == Status.queued]
    places = (
        served_places(
            session,
            waiting,
            seen_within_s=settings.workers_seen_s,
            max_running_per_user=settings.max_running_per_user,
        )
        if waiting
        else {}
    )
    attempts = attempts_of(session, [row.id for row in rows])
    shown = []
    for row in rows:
        public = ExperimentPublic.model_validate(row)
        public.attempt_log = [_attempt(attempt) for attempt in attempts.get(row.id, [])]
        if (place := places.get(row.id)) is not None:
            public.queue_position, public.eta_seconds = place.position, place.eta_seconds
            public.workers_up, public.waiting_for = place.workers_up, place.waiting_for
        shown.append(public)
    return shown


def _attempt(attempt: Attempt) -> AttemptPublic:
    accelerator = (
        None
        if attempt.accelerator is None
        else AcceleratorPublic(name=attempt.accelerator, memory_mb=attempt.accelerator_memory_mb)
    )
    return AttemptPublic(
        number=attempt.number,
        worker=attempt.worker,
        accelerator=accelerator,
        started_at=attempt.started_at,
        environment=None
        if attempt.environment is None
        else EnvironmentPublic.model_validate(attempt.environment),
    )
