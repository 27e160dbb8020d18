"""What the stored weights cost and how they stay bounded: bytes per user, the retention that
removes old runs' weights (pinned runs keep theirs), and giving deleted rows' space back to
the disk."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, delete, func, text, true
from sqlmodel import Session, col, select

from models.status import Status
from store.clock import db_now
from store.db import session_scope
from store.tables import BestCheckpoint, Checkpoint, Experiment

ENDED = (Status.succeeded, Status.failed, Status.cancelled)


class Keep(StrEnum):
    """What a run finished longer ago than the retention period keeps."""

    final = "final"
    """Its trained model (the newest checkpoint, with the optimizer's state); the best epoch's
    copy goes."""
    best_of_study = "best-of-study"
    """As ``final`` outside studies; in a study, only its best run (by final val_accuracy)."""
    none = "none"
    """No weights at all."""


@dataclass(frozen=True)
class Usage:
    user: str | None
    running: int
    queued: int
    paused: int
    stored_bytes: int


def stored_bytes(session: Session) -> dict[str | None, int]:
    """Bytes of weights (checkpoints and best-epoch copies) each user's runs hold."""
    return _stored(session, true())


def stored_bytes_of(session: Session, user: str | None) -> int:
    """Bytes of weights ``user``'s runs hold (None: those submitted while auth was off)."""
    return _stored(session, col(Experiment.owner).is_not_distinct_from(user)).get(user, 0)


def _stored(session: Session, owners: Any) -> dict[str | None, int]:
    totals: dict[str | None, int] = {}
    for table in (Checkpoint, BestCheckpoint):
        rows = session.exec(
            select(Experiment.owner, func.sum(func.length(table.data)))
            .join(Experiment, col(Experiment.id) == col(table.experiment_id))
            .where(owners)
            .group_by(col(Experiment.owner))
        ).all()
        for owner, size in rows:
            totals[owner] = totals.get(owner, 0) + int(size or 0)
    return totals


def usage(session: Session, user: str | None = None) -> list[Usage]:
    """Each user's runs going, waiting and paused, and the bytes their weights hold, by user
    (only ``user``'s when given)."""
    counts: dict[str | None, dict[str, int]] = {}
    query = select(Experiment.owner, Experiment.status, func.count()).where(
        col(Experiment.status).in_([Status.running, Status.queued, Status.paused])
    )
    for owner, status, count in session.exec(
        query.group_by(col(Experiment.owner), col(Experiment.status))
    ).all():
        counts.setdefault(owner, {})[str(status)] = int(count)
    sizes = stored_bytes(session)
    users = {user} if user is not None else set(counts) | set(sizes)
    return [
        Usage(
            user=name,
            running=counts.get(name, {}).get(Status.running, 0),
            queued=counts.get(name, {}).get(Status.queued, 0),
            paused=counts.get(name, {}).get(Status.paused, 0),
            stored_bytes=sizes.get(name, 0),
        )
        for name in sorted(users, key=lambda name: name or "")
    ]


def prune_ended_days_ago(engine: Engine, *, keep: Keep, days: float) -> tuple[int, datetime]:
    """``prune`` the runs that ended over ``days`` days ago by the database's clock; the rows
    removed and that cutoff."""
    with session_scope(engine) as session:
        cutoff = db_now(session) - timedelta(days=days)
        return prune(session, keep=keep, finished_before=cutoff), cutoff


def prune(session: Session, *, keep: Keep, finished_before: datetime) -> int:
    """Remove the weights that runs ended before ``finished_before`` (and not pinned) no
    longer keep; the number of rows removed (the caller commits, then ``reclaim``s)."""
    old = select(Experiment.id).where(
        col(Experiment.status).in_(ENDED),
        col(Experiment.finished_at) < finished_before,
        col(Experiment.pinned).is_(False),
    )
    removed = _delete(session, BestCheckpoint, col(BestCheckpoint.experiment_id).in_(old))
    if keep == Keep.none:
        removed += _delete(session, Checkpoint, col(Checkpoint.experiment_id).in_(old))
    elif keep == Keep.best_of_study:
        losers = old.where(
            col(Experiment.study_id).is_not(None),
            col(Experiment.id).not_in(_best_of_their_studies(session, old)),
        )
        removed += _delete(session, Checkpoint, col(Checkpoint.experiment_id).in_(losers))
    return removed


def _best_of_their_studies(session: Session, old: Any) -> list[str]:
    """The best run (highest final val_accuracy, else accuracy) of each study with old runs
    that still hold weights."""
    studies = select(Experiment.study_id).where(
        col(Experiment.id).in_(old),
        col(Experiment.study_id).is_not(None),
        col(Experiment.id).in_(select(Checkpoint.experiment_id)),
    )
    best: dict[str, tuple[float, str]] = {}
    for run_id, study_id, final in session.exec(
        select(Experiment.id, Experiment.study_id, Experiment.final).where(
            col(Experiment.study_id).in_(studies)
        )
    ).all():
        score = _score(final)
        if study_id is not None and score > best.get(study_id, (float("-inf"), ""))[0]:
            best[study_id] = (score, run_id)
    return [run_id for _, run_id in best.values()]


def _score(final: Mapping[str, Any] | None) -> float:
    if not final:
        return float("-inf")
    value = final.get("val_accuracy")
    return float(value if value is not None else final.get("accuracy", float("-inf")))


def _delete(session: Session, table: Any, where: Any) -> int:
    return int(session.exec(delete(table).where(where)).rowcount)  # type: ignore[call-overload]


def reclaim(engine: Engine) -> None:
    """Give the space of deleted rows back: PostgreSQL's VACUUM of the weights' tables (their
    free pages reused, trailing ones returned to the disk, without blocking writers); SQLite's
    incremental vacuum, which returns free pages to the disk (a database made before it was
    switched on is converted by one full VACUUM)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("VACUUM (ANALYZE) checkpoints, best_checkpoints"))
            return
        if connection.execute(text("PRAGMA auto_vacuum")).scalar() != 2:
            connection.execute(text("PRAGMA auto_vacuum = INCREMENTAL"))
            connection.execute(text("VACUUM"))
        # executescript steps the pragma to its end; execute would free one page per call
        driver = connection.connection.driver_connection
        assert driver is not None
        driver.executescript("PRAGMA incremental_vacuum;")
