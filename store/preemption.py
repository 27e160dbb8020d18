"""What the sweeper reads to choose a run to preempt (``jobs.preemption``): the queued runs
that have waited long enough to ask, and the running runs that may be asked to yield, each
with the accelerator of the process holding it. The request itself is a status change
(``store.transitions.ask_to_yield``)."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, select

from models.accelerator import Accelerator
from models.status import Priority, Status
from store.clock import db_now
from store.queue import RANK, running_per_user
from store.tables import Attempt, Experiment, WorkerRecord


@dataclass(frozen=True)
class Waiter:
    """A queued run that may ask a running one to yield."""

    id: str
    priority: Priority
    spec: dict[str, Any]


@dataclass(frozen=True)
class Holder:
    """A running run that may be asked to yield, and what its process computes on."""

    id: str
    priority: Priority
    last_start: datetime
    """When its current attempt started."""
    accelerator: Accelerator | None
    """None when its process has not beaten yet."""


def waiters(
    session: Session,
    *,
    waited_s: float,
    priorities: list[Priority],
    max_running_per_user: int | None = None,
) -> list[Waiter]:
    """Queued runs of ``priorities`` that went into the queue over ``waited_s`` ago, have
    asked no run to yield since, and whose user is below ``max_running_per_user`` running (a
    freed worker could not start them); highest priority first, oldest first within one."""
    since = db_now(session) - timedelta(seconds=waited_s)
    running = running_per_user(session)
    rows = session.exec(
        select(Experiment.id, Experiment.priority, Experiment.spec, Experiment.owner)
        .where(
            col(Experiment.status) == Status.queued,
            col(Experiment.priority).in_(priorities),
            ~col(Experiment.preempt_asked),
            func.coalesce(col(Experiment.queued_at), col(Experiment.created_at)) < since,
        )
        .order_by(col(Experiment.created_at))
    ).all()
    found = [
        Waiter(id_, Priority(priority), dict(spec))
        for id_, priority, spec, owner in rows
        if max_running_per_user is None or running.get(owner, 0) < max_running_per_user
    ]
    return sorted(found, key=lambda waiter: RANK[waiter.priority])


def holders(session: Session, *, below: Priority, max_preemptions: int) -> list[Holder]:
    """Running runs of a priority lower than ``below``, preempted fewer than
    ``max_preemptions`` times and asked nothing yet (to yield, pause or cancel)."""
    lower = [priority for priority in Priority if RANK[priority] > RANK[below]]
    if not lower:
        return []
    last_start = (
        select(func.max(col(Attempt.started_at)))
        .where(col(Attempt.experiment_id) == col(Experiment.id))
        .scalar_subquery()
    )
    columns: tuple[Any, ...] = (
        col(Experiment.id),
        col(Experiment.priority),
        func.coalesce(last_start, col(Experiment.started_at)),
        col(WorkerRecord.accelerator),
        col(WorkerRecord.accelerator_memory_mb),
    )
    rows = session.exec(
        select(*columns)
        .outerjoin(WorkerRecord, col(WorkerRecord.name) == col(Experiment.lease_owner))
        .where(
            col(Experiment.status) == Status.running,
            col(Experiment.priority).in_(lower),
            col(Experiment.preemptions) < max_preemptions,
            ~col(Experiment.yield_requested),
            ~col(Experiment.pause_requested),
            ~col(Experiment.cancel_requested),
        )
    ).all()
    return [
        Holder(
            id_,
            Priority(priority),
            started,
            None if accelerator is None else Accelerator(accelerator, memory_mb),
        )
        for id_, priority, started, accelerator, memory_mb in rows
    ]
