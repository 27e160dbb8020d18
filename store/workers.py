"""Workers' heartbeats: each training process says every few seconds that it is alive, on
which host and with which accelerator; ``GET /workers`` lists those heard from lately."""

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, delete
from sqlmodel import Session, col, select

from store.clock import db_now
from store.db import session_scope, upsert
from store.tables import Experiment, Status, WorkerRecord

FORGOTTEN_AFTER = timedelta(days=1)
"""Rows of processes silent this long are deleted (a recycled pool process is a new row)."""


def beat(
    engine: Engine, name: str, *, host: str, pid: int, accelerator: str, memory_mb: int | None
) -> None:
    """Record that the process ``name`` is alive now (the database's clock)."""
    with session_scope(engine) as session:
        now = db_now(session)
        values = {
            "name": name,
            "host": host,
            "pid": pid,
            "accelerator": accelerator,
            "accelerator_memory_mb": memory_mb,
            "started_at": now,
            "heartbeat_at": now,
        }
        upsert(
            session,
            WorkerRecord,
            values,
            keys=("name",),
            update=("heartbeat_at", "accelerator"),
        )
        session.exec(
            delete(WorkerRecord).where(col(WorkerRecord.heartbeat_at) < now - FORGOTTEN_AFTER)
        )


@dataclass(frozen=True)
class LiveWorker:
    record: WorkerRecord
    experiment_id: str | None
    """The run it holds now, if any."""


def live_workers(session: Session, *, seen_within_s: float) -> list[LiveWorker]:
    """The processes heard from in the last ``seen_within_s``, by host and name, each with the
    experiment it is running."""
    since = db_now(session) - timedelta(seconds=seen_within_s)
    rows = session.exec(
        select(WorkerRecord)
        .where(col(WorkerRecord.heartbeat_at) >= since)
        .order_by(col(WorkerRecord.host), col(WorkerRecord.name))
    ).all()
    running = dict(
        session.exec(
            select(Experiment.lease_owner, Experiment.id).where(
                col(Experiment.status) == Status.running,
                col(Experiment.lease_owner).in_([row.name for row in rows]),
            )
        ).all()
    )
    return [LiveWorker(row, running.get(row.name)) for row in rows]
