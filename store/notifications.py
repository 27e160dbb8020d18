"""The notifications waiting to be sent, and each attempt's outcome. An attempt is taken by one
conditional update, so two API processes never send the same attempt twice."""

from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, Engine, exists, or_, update
from sqlmodel import col, select

from models.status import ACTIVE
from store.clock import db_now
from store.db import session_scope
from store.studies import study_experiments
from store.tables import Experiment, Study


class Delivery(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


Notified = Experiment | Study
MAX_PER_PASS = 20
"""Notifications one pass sends at most (each may take the delivery timeout)."""


def _due(table: type[Experiment] | type[Study], now: datetime) -> list[ColumnElement[bool]]:
    return [
        col(table.notify_state) == Delivery.pending,
        or_(col(table.notify_next_at).is_(None), col(table.notify_next_at) <= now),
    ]


def due(engine: Engine) -> tuple[list[Experiment], list[tuple[Study, list[Experiment]]]]:
    """The ended experiments whose notification is due, and the studies whose notification is
    due and none of whose experiments may still run, with their experiments (whether a search
    has trials to come is the caller's to judge), as detached rows."""
    with session_scope(engine) as session:
        now = db_now(session)
        ended = col(Experiment.status).not_in(ACTIVE)
        runs = session.exec(
            select(Experiment).where(*_due(Experiment, now), ended).limit(MAX_PER_PASS)
        ).all()
        running = exists().where(
            col(Experiment.study_id) == col(Study.id), col(Experiment.status).in_(ACTIVE)
        )
        studies = session.exec(
            select(Study).where(*_due(Study, now), ~running).limit(MAX_PER_PASS)
        ).all()
        pending = [(study, study_experiments(session, study.id)) for study in studies]
        session.expunge_all()
        return list(runs), pending


def take_attempt(engine: Engine, row: Notified, *, retry_after_s: float) -> bool:
    """Count an attempt at ``row``'s notification and hold off others until ``retry_after_s``
    from now; False if another process took this attempt first."""
    table = type(row)
    with session_scope(engine) as session:
        retry_at = db_now(session) + timedelta(seconds=retry_after_s)
        taken = session.exec(
            update(table)
            .where(
                col(table.id) == row.id,
                col(table.notify_state) == Delivery.pending,
                col(table.notify_attempts) == row.notify_attempts,
            )
            .values(notify_attempts=row.notify_attempts + 1, notify_next_at=retry_at)
        )
        return bool(taken.rowcount == 1)


def record_outcome(engine: Engine, row: Notified, state: Delivery, error: str | None) -> None:
    """What the attempt taken at ``row`` ended with."""
    table = type(row)
    with session_scope(engine) as session:
        session.exec(
            update(table)
            .where(col(table.id) == row.id)
            .values(notify_state=state, notify_error=error)
        )


def ask_to_notify(row: Experiment | Study, url: str | None) -> None:
    """Record ``url`` (already checked) as where a new row's end is announced, a pending
    notification (the caller commits)."""
    if url is not None:
        row.notify_url, row.notify_state = url, Delivery.pending
