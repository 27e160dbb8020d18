"""Workers' heartbeats: each training process says every few seconds that it is alive, on
which host and with which accelerator; ``GET /workers`` lists those heard from lately."""

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, delete
from sqlmodel import Session, col, select

from models.accelerator import Accelerator
from models.status import Status
from store.clock import db_now
from store.db import session_scope, upsert
from store.tables import Attempt, Experiment, WorkerRecord

FORGOTTEN_AFTER = timedelta(days=1)
"""Rows of processes silent this long are deleted (a recycled pool process is a new row)."""


def beat(
    engine: Engine,
    name: str,
    *,
    host: str,
    pid: int,
    accelerator: Accelerator,
    gpu_use: tuple[int | None, int | None] = (None, None),
    slot: tuple[int, int, int | None] = (0, 1, None),
) -> None:
    """Record that the process ``name`` is alive now (the database's clock), with its GPU's
    utilization (percent) and memory in use (MB) where it has one, and its ``slot``: which of
    its worker's slots it is, of how many, with how much GPU memory (None: grown as needed)."""
    with session_scope(engine) as session:
        now = db_now(session)
        values = {
            "name": name,
            "host": host,
            "pid": pid,
            "accelerator": accelerator.name,
            "accelerator_memory_mb": accelerator.memory_mb,
            "started_at": now,
            "heartbeat_at": now,
            "gpu_utilization": gpu_use[0],
            "gpu_memory_used_mb": gpu_use[1],
            "slot": slot[0],
            "slots": slot[1],
            "gpu_memory_limit_mb": slot[2],
        }
        upsert(
            session,
            WorkerRecord,
            values,
            keys=("name",),
            update=("heartbeat_at", "accelerator", "gpu_utilization", "gpu_memory_used_mb"),
        )
        session.exec(
            delete(WorkerRecord).where(col(WorkerRecord.heartbeat_at) < now - FORGOTTEN_AFTER)
        )


def accelerators_seen(session: Session) -> set[Accelerator]:
    """The accelerators of the processes heard from within ``FORGOTTEN_AFTER`` (a day)."""
    since = db_now(session) - FORGOTTEN_AFTER
    rows = session.exec(
        select(WorkerRecord.accelerator, WorkerRecord.accelerator_memory_mb)
        .where(col(WorkerRecord.heartbeat_at) >= since)
        .distinct()
    ).all()
    return {Accelerator(name, memory_mb) for name, memory_mb in rows}


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


def attempts_of(session: Session, ids: list[str]) -> dict[str, list[Attempt]]:
    """Each experiment's attempts, first first: which process ran it, on what, from when."""
    found: dict[str, list[Attempt]] = {}
    rows = session.exec(
        select(Attempt)
        .where(col(Attempt.experiment_id).in_(ids))
        .order_by(col(Attempt.experiment_id), col(Attempt.number))
    )
    for attempt in rows.all():
        found.setdefault(attempt.experiment_id, []).append(attempt)
    return found
