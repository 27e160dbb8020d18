"""Which queued runs the broker holds a message for: a mark set when one is published, cleared
when a worker lets the message go, and the runs the sweeper publishes (again)."""

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, func, update
from sqlmodel import col, select

from models.accelerator import Accelerator
from models.status import Status
from store.clock import db_now
from store.db import session_scope
from store.placement import fits
from store.tables import Experiment


def mark_published(engine: Engine, experiment_id: str) -> None:
    """Note, in the database's time, that the run's message was just published."""
    with session_scope(engine) as session:
        session.exec(
            update(Experiment)
            .where(col(Experiment.id) == experiment_id)
            .values(dispatched_at=db_now(session))
        )


def undispatch(engine: Engine, experiment_id: str, *, taken_by: Accelerator | None = None) -> None:
    """Mark a queued run as holding no message, so that the sweeper publishes it again: a
    worker took its message and will not run it (stopping, or its user at the running cap).
    With ``taken_by``, only if that accelerator could take it: a run for another kind keeps
    its message, republished only after the stale horizon."""
    fitting = [] if taken_by is None else [fits(taken_by)]
    with session_scope(engine) as session:
        session.exec(
            update(Experiment)
            .where(
                col(Experiment.id) == experiment_id,
                col(Experiment.status) == Status.queued,
                *fitting,
            )
            .values(dispatched_at=None)
        )


@dataclass(frozen=True)
class Unsent:
    """Queued runs the broker may hold no message for."""

    never: list[str]
    """Never published, oldest first."""
    stale: list[str]
    """Published longer ago than the horizon, oldest publish first."""
    published: int
    """Queued runs published at all (0 when none is stale: not counted then)."""


def unsent(engine: Engine, *, grace_seconds: float, horizon_seconds: float) -> Unsent:
    """The queued runs never published that are older than ``grace_seconds`` (a submit still
    publishing is left alone) and those published over ``horizon_seconds`` ago."""
    with session_scope(engine) as session:
        now = db_now(session)
        queued = col(Experiment.status) == Status.queued
        never = session.exec(
            select(Experiment.id)
            .where(
                queued,
                col(Experiment.dispatched_at).is_(None),
                col(Experiment.created_at) < now - timedelta(seconds=grace_seconds),
            )
            .order_by(col(Experiment.created_at))
        ).all()
        old = col(Experiment.dispatched_at) < now - timedelta(seconds=horizon_seconds)
        stale = session.exec(
            select(Experiment.id)
            .where(queued, old)
            .order_by(col(Experiment.dispatched_at), col(Experiment.created_at))
        ).all()
        published = col(Experiment.dispatched_at).is_not(None)
        count = session.exec(select(func.count()).where(queued, published)).one() if stale else 0
    return Unsent(list(never), list(stale), count)
