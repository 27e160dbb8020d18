"""What a training run writes while it holds its lease: one row and one checkpoint per finished
epoch, its evaluation and best model. Every write is fenced by the lease: a process that lost
its lease (declared dead, its job resumed elsewhere) can no longer change the experiment. Lease
times are the database's (``store.clock``), never a host's. The run's status changes (claim,
release, finish) are in ``store.transitions``."""

import hashlib
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, update
from sqlmodel import Session, col, select

from models.epochs import EpochMetrics
from models.status import Status
from store.clock import db_now
from store.db import session_scope, upsert
from store.tables import (
    BestCheckpoint,
    Checkpoint,
    EpochRecord,
    Evaluation,
    Experiment,
    Study,
    utcnow,
)


class LeaseLost(Exception):
    """Another process holds the experiment now; this one must stop without writing."""


def renew_lease(engine: Engine, experiment_id: str, owner: str, *, lease_seconds: float) -> bool:
    """Extend this process's lease; False if it no longer holds the run."""
    with session_scope(engine) as session:
        return fence(session, experiment_id, owner, lease_seconds=lease_seconds) is not None


def record_epoch(
    engine: Engine,
    experiment_id: str,
    owner: str,
    metrics: EpochMetrics,
    *,
    checkpoint: bytes | None,
    lease_seconds: float,
    keep_checkpoints: int = 2,
) -> None:
    """In one transaction: renew the lease, upsert the epoch's row, refresh progress and
    summary, and store the checkpoint taken after it if one was (keeping the newest few).

    In a study, the row takes the study's next ``study_seq`` first: the lock on the study's row
    that this takes, held until the commit, makes the numbers follow the commit order. It is
    taken before the experiment's row, as a search's advance locks its study before it touches
    its trials."""
    with session_scope(engine) as session:
        study_seq = _next_study_seq(session, experiment_id)
        now = fence(session, experiment_id, owner, lease_seconds=lease_seconds)
        if now is None:
            raise LeaseLost(experiment_id)
        values = asdict(metrics) | {
            "experiment_id": experiment_id,
            "recorded_at": now,
            "study_seq": study_seq,
        }
        upsert(session, EpochRecord, values, keys=("experiment_id", "epoch"))
        refresh_summary(session, experiment_id)
        if checkpoint is not None:
            store_checkpoint(session, experiment_id, metrics.epoch, checkpoint)
            kept = (
                select(Checkpoint.epoch)
                .where(Checkpoint.experiment_id == experiment_id)
                .order_by(col(Checkpoint.epoch).desc())
                .limit(keep_checkpoints)
            )
            session.exec(
                delete(Checkpoint).where(
                    col(Checkpoint.experiment_id) == experiment_id,
                    col(Checkpoint.epoch).not_in(kept.scalar_subquery()),
                )
            )


def save_evaluation(engine: Engine, evaluation: Evaluation, owner: str) -> None:
    """Store the run's ``evaluation`` while ``owner`` holds it, replacing one a retried
    attempt stored before."""
    with session_scope(engine) as session:
        if fence(session, evaluation.experiment_id, owner, lease_seconds=None) is None:
            raise LeaseLost(evaluation.experiment_id)
        session.merge(evaluation)


def keep_best(
    engine: Engine,
    experiment_id: str,
    owner: str,
    *,
    epoch: int,
    monitor: str,
    value: float,
    data: bytes,
) -> None:
    """Store ``data`` (a ``.keras`` archive) as the run's best model, after ``epoch``."""
    with session_scope(engine) as session:
        now = fence(session, experiment_id, owner, lease_seconds=None)
        if now is None:
            raise LeaseLost(experiment_id)
        values = {
            "experiment_id": experiment_id,
            "epoch": epoch,
            "monitor": monitor,
            "value": value,
            "data": data,
            "sha256": hashlib.sha256(data).hexdigest(),
            "created_at": now,
        }
        upsert(session, BestCheckpoint, values, keys=("experiment_id",))


def checkpoints(engine: Engine, experiment_id: str) -> list[tuple[int, bytes | None]]:
    """The run's checkpoints, newest first, as (epoch, data); data is None if it fails its hash."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Checkpoint)
            .where(Checkpoint.experiment_id == experiment_id)
            .order_by(col(Checkpoint.epoch).desc())
        ).all()
        return [
            (row.epoch, row.data if hashlib.sha256(row.data).hexdigest() == row.sha256 else None)
            for row in rows
        ]


def trained_model(engine: Engine, experiment_id: str) -> tuple[int, bytes] | None:
    """The newest checkpoint of a finished epoch that passes its hash, as (epoch, ``.keras``
    bytes); the weights of a run stopped during its first epoch are only for resuming it."""
    candidates = checkpoints(engine, experiment_id)
    return next(((epoch, data) for epoch, data in candidates if data and epoch > 0), None)


def rewind(engine: Engine, experiment_id: str, owner: str, *, to_epoch: int) -> None:
    """Forget epochs after ``to_epoch`` (a resume starts from there) and newer checkpoints."""
    with session_scope(engine) as session:
        if fence(session, experiment_id, owner, lease_seconds=None) is None:
            raise LeaseLost(experiment_id)
        for table in (EpochRecord, Checkpoint):
            session.exec(
                delete(table).where(
                    col(table.experiment_id) == experiment_id, col(table.epoch) > to_epoch
                )
            )
        refresh_summary(session, experiment_id)


def requested_stop(engine: Engine, experiment_id: str) -> Status | None:
    """What someone asked the run to become: cancelled (also once it is deleted), paused,
    queued (to yield its worker to a higher-priority run: ``jobs.preemption``), or None to
    train on."""
    with session_scope(engine) as session:
        experiment = session.get(Experiment, experiment_id)
        if experiment is None or experiment.cancel_requested:
            return Status.cancelled
        if experiment.pause_requested:
            return Status.paused
        return Status.queued if experiment.yield_requested else None


def refresh_summary(session: Session, experiment_id: str) -> None:
    """An experiment's progress, ``final`` (the last epoch) and ``best`` (highest val_accuracy)
    from its epoch rows, in the caller's transaction (fenced there when it must be)."""
    epochs = session.exec(
        select(EpochRecord)
        .where(EpochRecord.experiment_id == experiment_id)
        .order_by(col(EpochRecord.epoch))
    ).all()
    # No epoch of its own yet: a continued run has done its parent's epochs.
    summary: dict[str, Any] = {"epochs_done": Experiment.epoch_offset, "final": None, "best": None}
    if epochs:
        last = epochs[-1]
        best = max(epochs, key=lambda row: (row.val_accuracy or 0.0, -row.epoch))
        summary = {
            "epochs_done": last.epoch,
            "final": {
                "accuracy": last.accuracy,
                "loss": last.loss,
                "val_accuracy": last.val_accuracy,
                "val_loss": last.val_loss,
            },
            "best": {
                "epoch": best.epoch,
                "val_accuracy": best.val_accuracy,
                "val_loss": best.val_loss,
            },
        }
    session.exec(update(Experiment).where(col(Experiment.id) == experiment_id).values(**summary))


def fence(
    session: Session, experiment_id: str, owner: str, *, lease_seconds: float | None
) -> datetime | None:
    """The database's time if ``owner`` still holds the running experiment (extending its
    lease if asked), None if it does not."""
    now = db_now(session)
    values: dict[str, Any] = {"lease_owner": owner}
    if lease_seconds is not None:
        values["lease_expires_at"] = now + timedelta(seconds=lease_seconds)
    held = session.exec(
        update(Experiment)
        .where(
            col(Experiment.id) == experiment_id,
            col(Experiment.lease_owner) == owner,
            col(Experiment.status) == Status.running,
        )
        .values(**values)
    )
    return now if held.rowcount == 1 else None


def _next_study_seq(session: Session, experiment_id: str) -> int | None:
    """The next number of the experiment's study's epoch rows (None outside a study)."""
    study = select(Experiment.study_id).where(col(Experiment.id) == experiment_id)
    taken = session.exec(
        update(Study)
        .where(col(Study.id) == study.scalar_subquery())
        .values(epoch_seq=col(Study.epoch_seq) + 1)
        .returning(col(Study.epoch_seq))
    ).first()
    return None if taken is None else int(taken[0])


def store_checkpoint(session: Session, experiment_id: str, epoch: int, data: bytes) -> None:
    values = {
        "experiment_id": experiment_id,
        "epoch": epoch,
        "data": data,
        "sha256": hashlib.sha256(data).hexdigest(),
        "created_at": utcnow(),
    }
    upsert(session, Checkpoint, values, keys=("experiment_id", "epoch"))
