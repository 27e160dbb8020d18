"""Reading and changing experiment rows: the queries the API and the worker share."""

import base64
import binascii
import json
import re
import uuid
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, update
from sqlmodel import Session, col, select

from store.tables import ACTIVE, EpochMetrics, EpochRecord, Experiment, Status, Study, utcnow


class InvalidCursor(ValueError):
    """A paging cursor this server did not hand out."""


MAX_CURSOR_CHARS = 200
"""Longer than any cursor ``encode_cursor`` makes (about 100 characters)."""
_ROW_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


class Conflict(Exception):
    """The experiment's status does not allow what was asked."""


def create_experiment(
    session: Session,
    *,
    name: str | None,
    spec: dict[str, Any],
    study_id: str | None = None,
    variant: str | None = None,
    owner: str | None = None,
) -> Experiment:
    """Store a new queued experiment for a resolved spec (the caller commits, then dispatches)."""
    experiment = Experiment(
        id=uuid.uuid4().hex,
        name=name,
        preset=spec["preset"],
        spec=spec,
        study_id=study_id,
        variant=variant,
        owner=owner,
        epochs_total=spec["training"]["epochs"],
    )
    session.add(experiment)
    return experiment


def list_experiments(
    session: Session,
    *,
    status: Status | None = None,
    preset: str | None = None,
    study_id: str | None = None,
    owner: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Experiment], str | None]:
    """A page of experiments, newest first, and the cursor of the next page (None at the end)."""
    query = select(Experiment)
    if status is not None:
        query = query.where(Experiment.status == status)
    if preset is not None:
        query = query.where(Experiment.preset == preset)
    if study_id is not None:
        query = query.where(Experiment.study_id == study_id)
    if owner is not None:
        query = query.where(Experiment.owner == owner)
    return newest_first(session, query, Experiment, limit=limit, cursor=cursor)


def newest_first(
    session: Session, query: Any, table: Any, *, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """A page of ``query`` over ``table`` (with created_at and id), newest first, and the
    cursor of the next page (None at the end)."""
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                col(table.created_at) < created_at,
                and_(col(table.created_at) == created_at, col(table.id) < last_id),
            )
        )
    query = query.order_by(col(table.created_at).desc(), col(table.id).desc())
    rows = list(session.exec(query.limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.created_at, last.id)


METRIC_COLUMNS = tuple(getattr(EpochRecord, field.name) for field in fields(EpochMetrics))


def history(session: Session, experiment_id: str, *, since: int = 0) -> list[EpochMetrics]:
    """The experiment's finished epochs after ``since``, in order (read as columns, not ORM
    objects: half the time, and this is the API's busiest read)."""
    query = (
        select(*METRIC_COLUMNS)
        .where(EpochRecord.experiment_id == experiment_id, EpochRecord.epoch > since)
        .order_by(col(EpochRecord.epoch))
    )
    return [EpochMetrics(*row) for row in session.exec(query)]


def newest_epoch_at(session: Session, *, experiment_ids: list[str]) -> datetime | None:
    """When the newest epoch row of these experiments was recorded (None if they have none)."""
    return session.exec(
        select(func.max(EpochRecord.recorded_at)).where(
            col(EpochRecord.experiment_id).in_(experiment_ids)
        )
    ).one()


OWNER_LOCKS = 7210252
"""The first key of PostgreSQL's advisory locks on users' submissions (the second: a hash of
the user's name); two-key locks never collide with the one-key migration lock."""


def lock_and_count_active(session: Session, *, owner: str) -> int:
    """How many of ``owner``'s experiments are queued or running or about to be (the first
    trials of their searches, not stored yet), counted under a lock on ``owner``'s submissions
    that the session holds until its transaction ends: the count stays true until the submit
    that read it has committed its rows. To be called first in a transaction.

    The lock: on PostgreSQL a transaction-scoped advisory lock (other users are not held up);
    on SQLite the database's write lock (``BEGIN IMMEDIATE``: SQLite has one writer at a time
    anyway), taken before the count reads anything.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.exec(select(func.pg_advisory_xact_lock(OWNER_LOCKS, func.hashtext(owner))))
    else:
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    active = session.exec(
        select(func.count()).where(Experiment.owner == owner, col(Experiment.status).in_(ACTIVE))
    ).one()
    return active + _first_trials_to_come(session, owner)


def _first_trials_to_come(session: Session, owner: str) -> int:
    """Trials of ``owner``'s searches counted toward the cap when submitted but not stored yet
    (each search starts ``min(parallel, n_trials)`` trials right after its own row commits)."""
    parallel = col(Study.definition)[("search", "parallel")].as_integer()
    n_trials = col(Study.definition)[("search", "n_trials")].as_integer()
    starting = session.exec(
        select(parallel, n_trials, Study.trials_started).where(
            Study.owner == owner,
            Study.kind == "search",
            col(Study.cancel_requested).is_(False),
            col(Study.trials_started) < parallel,
        )
    ).all()
    return sum(max(0, min(width, total) - started) for width, total, started in starting)


def cancel(session: Session, experiment: Experiment) -> Experiment:
    """Cancel at once if queued; ask the trainer to stop if running; Conflict if finished."""
    now = utcnow()
    queued = session.exec(
        update(Experiment)
        .where(col(Experiment.id) == experiment.id, col(Experiment.status) == Status.queued)
        .values(status=Status.cancelled, cancel_requested=True, finished_at=now)
    )
    if queued.rowcount == 0:
        running = session.exec(
            update(Experiment)
            .where(col(Experiment.id) == experiment.id, col(Experiment.status) == Status.running)
            .values(cancel_requested=True)
        )
        if running.rowcount == 0:
            session.refresh(experiment)
            raise Conflict(
                f"Experiment {experiment.id} is already {experiment.status}; "
                "only queued or running experiments can be cancelled."
            )
    session.commit()
    session.refresh(experiment)
    return experiment


def delete(session: Session, experiment: Experiment) -> None:
    """Delete a finished experiment and its history; Conflict while it may still run."""
    if experiment.status in ACTIVE:
        raise Conflict(
            f"Experiment {experiment.id} is {experiment.status}; cancel it before deleting."
        )
    session.delete(experiment)
    session.commit()


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """An opaque paging cursor after the row (created_at, id) of a newest-first listing."""
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor points after; InvalidCursor unless it is exactly a cursor
    that ``encode_cursor`` makes (so no size, nesting or type of JSON gets further)."""
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("longer than any cursor this server makes")
        created_at, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(created_at)
        if not _ROW_ID.fullmatch(row_id) or encode_cursor(when, row_id) != cursor:
            raise ValueError("not in the form encode_cursor makes")
        return when, row_id
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursor(
            "The cursor is not one this server gave out; start again without it."
        ) from exc
