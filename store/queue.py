"""The order in which queued runs start: higher priority first; within a priority, the user
with the fewest runs going, then the one served longest ago, takes the next turn (fair share);
a user's own runs go oldest first. A worker's claim starts the first of this order, so the
choice is made in the database whatever message woke the worker; ``jobs.forecast`` reads the
same order to tell each queued run its place."""

import heapq
import itertools
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, select

from models.accelerator import Accelerator
from models.status import Priority, Status
from store.clock import db_now
from store.placement import fits
from store.tables import Attempt, EpochRecord, Experiment

RANK = {Priority.high: 0, Priority.normal: 1, Priority.low: 2}
PACE_SAMPLE = 500
"""Epoch rows read, newest first, to time similar runs."""
TURNS_REMEMBERED = timedelta(days=1)
"""A user served longer ago than this counts as never served (bounds the attempts read)."""


@dataclass(frozen=True)
class Waiting:
    """A queued run, as the order needs it."""

    id: str
    owner: str | None
    priority: Priority
    created_at: datetime
    epochs_left: int


@dataclass(frozen=True)
class Line:
    """What decides the order: the queued runs, and each user's runs going and last start."""

    waiting: list[Waiting]
    running: dict[str | None, int] = field(default_factory=dict)
    last_start: dict[str | None, datetime] = field(default_factory=dict)


_WAITING_COLUMNS: tuple[Any, ...] = (
    col(Experiment.id),
    col(Experiment.owner),
    col(Experiment.priority),
    col(Experiment.created_at),
    col(Experiment.epochs_total),
    col(Experiment.epochs_done),
)


def read_line(session: Session, *, taken_by: Accelerator | None = None) -> Line:
    """The queue as it stands (three indexed reads); only the runs a worker computing on
    ``taken_by`` may take, when given (``store.placement``)."""
    queued = col(Experiment.status) == Status.queued
    where = queued if taken_by is None else queued & fits(taken_by)
    waiting = [
        Waiting(id_, owner, Priority(priority), created_at, max(total - done, 0))
        for id_, owner, priority, created_at, total, done in session.exec(
            select(*_WAITING_COLUMNS).where(where)
        ).all()
    ]
    if not waiting:
        return Line([])
    latest = func.max(col(Attempt.started_at))
    starts = session.exec(
        select(Experiment.owner, latest)
        .join(Attempt, col(Attempt.experiment_id) == col(Experiment.id))
        .where(col(Attempt.started_at) > db_now(session) - TURNS_REMEMBERED)
        .group_by(col(Experiment.owner))
    ).all()
    last_start = {owner: at for owner, at in starts if at is not None}
    return Line(waiting, running_per_user(session), last_start)


def running_per_user(session: Session) -> dict[str | None, int]:
    """How many runs each user has running (owner None: auth off)."""
    rows = session.exec(
        select(Experiment.owner, func.count())
        .where(col(Experiment.status) == Status.running)
        .group_by(col(Experiment.owner))
    ).all()
    return {owner: count for owner, count in rows}


def below_cap(line: Line, cap: int | None) -> Line:
    """The line without the runs of users who have ``cap`` runs going already (the running cap
    per user; None: no cap)."""
    if cap is None:
        return line
    waiting = [run for run in line.waiting if line.running.get(run.owner, 0) < cap]
    return Line(waiting, line.running, line.last_start)


def serve_order(line: Line) -> list[Waiting]:
    """Every queued run in the order workers will start them if nothing else changes: each
    start counts as one more run going for its user, and makes its user the last served."""
    by_user: dict[tuple[int, str | None], deque[Waiting]] = defaultdict(deque)
    for run in sorted(line.waiting, key=lambda run: (run.created_at, run.id)):
        by_user[RANK[run.priority], run.owner].append(run)
    going = dict(line.running)
    served = {owner: (0, _order_key(at)) for owner, at in line.last_start.items()}
    later = itertools.count(1)
    order: list[Waiting] = []
    for rank in sorted({rank for rank, _ in by_user}):
        queues = {owner: runs for (r, owner), runs in by_user.items() if r == rank}
        turns = [_turn(owner, runs[0], going, served) for owner, runs in queues.items()]
        heapq.heapify(turns)
        while turns:
            *_, owner = heapq.heappop(turns)
            runs = queues[owner]
            order.append(runs.popleft())
            going[owner] = going.get(owner, 0) + 1
            served[owner] = (1, float(next(later)))
            if runs:
                heapq.heappush(turns, _turn(owner, runs[0], going, served))
    return order


def _turn(
    owner: str | None,
    oldest: Waiting,
    going: dict[str | None, int],
    served: dict[str | None, tuple[int, float]],
) -> tuple[Any, ...]:
    """A user's place among those waiting: fewest going, served longest ago (never: first),
    oldest waiting run; the owner last (None sorts as "")."""
    never = (-1, 0.0)
    return (
        going.get(owner, 0),
        served.get(owner, never),
        _order_key(oldest.created_at),
        owner or "",
        owner,
    )


def _order_key(at: datetime) -> float:
    """A time as a number (SQLite hands back naive times, PostgreSQL aware ones: one kind
    per database, so they compare among themselves)."""
    return at.timestamp()


def running_runs(session: Session) -> list[tuple[dict[str, Any], int, str | None]]:
    """Each running run's spec, epochs left and owner."""
    rows = session.exec(
        select(
            Experiment.spec, Experiment.epochs_total, Experiment.epochs_done, Experiment.owner
        ).where(col(Experiment.status) == Status.running)
    ).all()
    return [(dict(spec), max(total - done, 0), owner) for spec, total, done, owner in rows]


def specs_of(session: Session, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The specs of these experiments, by id."""
    rows = session.exec(select(Experiment.id, Experiment.spec).where(col(Experiment.id).in_(ids)))
    return {id_: dict(spec) for id_, spec in rows.all()}


def recent_epoch_seconds(session: Session) -> list[tuple[dict[str, Any], float]]:
    """The newest epochs' seconds with their runs' specs (first epochs left out: they include
    building the model)."""
    rows = session.exec(
        select(Experiment.spec, EpochRecord.seconds)
        .join(Experiment, col(Experiment.id) == col(EpochRecord.experiment_id))
        .where(col(EpochRecord.epoch) > 1)
        .order_by(col(EpochRecord.recorded_at).desc())
        .limit(PACE_SAMPLE)
    ).all()
    return [(dict(spec), seconds) for spec, seconds in rows]


def queue_counts(session: Session) -> tuple[int, int]:
    """How many runs are queued and how many run (counted on the status index): a forecast
    made at other counts is out of date."""
    rows = session.exec(
        select(Experiment.status, func.count())
        .where(col(Experiment.status).in_([Status.queued, Status.running]))
        .group_by(col(Experiment.status))
    ).all()
    counts = {str(status): int(count) for status, count in rows}
    return counts.get(Status.queued, 0), counts.get(Status.running, 0)
