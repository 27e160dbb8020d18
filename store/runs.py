"""State changes a training run makes: claim under a lease, one row and one checkpoint per
finished epoch, and the end. Every write after the claim is fenced by the lease: a process that
lost its lease (declared dead, its job resumed elsewhere) can no longer change the experiment.
Lease times are the database's (``store.clock``), never a host's."""

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, delete, func, update
from sqlmodel import Session, col, select

from store.clock import db_now, takeover_cutoff
from store.db import session_scope, upsert
from store.leases import is_gone
from store.queue import read_line, serve_order
from store.tables import (
    Attempt,
    BestCheckpoint,
    Checkpoint,
    EpochMetrics,
    EpochRecord,
    Evaluation,
    Experiment,
    Status,
    Study,
    utcnow,
)
from store.workers import Accelerator

RELEASED_STATUS = case((col(Experiment.pause_requested), Status.paused), else_=Status.queued)
"""Where a run goes when its process lets go of it (or is gone): paused if a pause was asked,
else back to the queue."""


class LeaseLost(Exception):
    """Another process holds the experiment now; this one must stop without writing."""


@dataclass(frozen=True)
class Claim:
    """A run this process now holds."""

    experiment: Experiment
    took_over: bool
    """The previous attempt's process died holding the run."""


CLAIM_TRIES = 10
"""Runs tried from one reading of the serving order, as other workers take the first ones."""
ORDER_READS = 100
"""Readings of the order before giving up (the sweeper publishes again for what is left)."""


def claim_next(
    engine: Engine,
    woken_for: str,
    owner: str,
    *,
    lease_seconds: float,
    max_lost: int,
    accelerator: Accelerator | None = None,
    environment: dict[str, Any] | None = None,
) -> Claim | None:
    """Take the run this process should train now, whichever message woke it: one it holds
    already (a claim whose answer an outage lost), else ``woken_for`` if it is running and its
    holder is gone, else the first queued run in the fair-share order (``store.queue``); None
    if there is none."""
    terms: dict[str, Any] = {
        "lease_seconds": lease_seconds,
        "max_lost": max_lost,
        "accelerator": accelerator,
        "environment": environment,
    }
    with session_scope(engine) as session:
        held = session.exec(
            select(Experiment.id).where(
                col(Experiment.status) == Status.running, col(Experiment.lease_owner) == owner
            )
        ).first()
    if held is not None and (claimed := claim(engine, held, owner, **terms)) is not None:
        return claimed
    if (claimed := claim(engine, woken_for, owner, queued_too=False, **terms)) is not None:
        return claimed
    for _ in range(ORDER_READS):  # each run lost was taken by another worker: progress
        with session_scope(engine) as session:
            order = serve_order(read_line(session))
        if not order:
            return None
        for run in order[:CLAIM_TRIES]:
            if (claimed := claim(engine, run.id, owner, **terms)) is not None:
                return claimed
    return None


def claim(
    engine: Engine,
    experiment_id: str,
    owner: str,
    *,
    lease_seconds: float,
    max_lost: int,
    accelerator: Accelerator | None = None,
    environment: dict[str, Any] | None = None,
    queued_too: bool = True,
) -> Claim | None:
    """Take a queued run (unless not ``queued_too``), or a running one whose holder is gone (or
    is this process); None if neither. Each claim is an attempt, recorded with the process, its
    ``accelerator`` and its ``environment`` (``worker.environment``).

    Taking over from a dead holder counts a lost worker; at ``max_lost`` the run fails instead.
    """
    with session_scope(engine) as session:
        seen = session.get(Experiment, experiment_id)
        if seen is None:
            return None
        now, cutoff = takeover_cutoff(session, lease_seconds)
        expired = cutoff is not None and _expired(seen.lease_expires_at, cutoff)
        took_over = seen.status == Status.running and (expired or is_gone(seen.lease_owner))
        # A claim that committed while its answer was lost to an outage is retried by its owner.
        mine = seen.status == Status.running and seen.lease_owner == owner
        if not (took_over or mine or (queued_too and seen.status == Status.queued)):
            return None
        lost = seen.workers_lost + int(took_over and not mine)  # its own: not lost
        unchanged = [
            col(Experiment.id) == experiment_id,
            col(Experiment.status) == seen.status,
            col(Experiment.lease_owner).is_not_distinct_from(seen.lease_owner),
            col(Experiment.lease_expires_at).is_not_distinct_from(seen.lease_expires_at),
        ]
        if lost >= max_lost:
            session.exec(
                update(Experiment)
                .where(*unchanged)
                .values(
                    status=Status.failed,
                    workers_lost=lost,
                    lease_owner=None,
                    lease_expires_at=None,
                    finished_at=now,
                    error=(
                        f"worker lost {lost} times during epoch {seen.epochs_done + 1}; "
                        "the job may need more memory than a worker has (try a smaller "
                        "training.batch_size or model)"
                    ),
                )
            )
            return None
        taken = session.exec(
            update(Experiment)
            .where(*unchanged)
            .values(
                status=Status.running,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=col(Experiment.attempts) + 1,
                workers_lost=lost,
                started_at=func.coalesce(col(Experiment.started_at), now),
            )
        )
        if taken.rowcount == 0:
            return None
        experiment = session.get(Experiment, experiment_id, populate_existing=True)
        assert experiment is not None
        session.add(
            Attempt(
                experiment_id=experiment_id,
                number=experiment.attempts,
                worker=owner,
                accelerator=accelerator.name if accelerator else None,
                accelerator_memory_mb=accelerator.memory_mb if accelerator else None,
                environment=environment,
                started_at=now,
            )
        )
        return Claim(experiment, took_over)


def renew_lease(engine: Engine, experiment_id: str, owner: str, *, lease_seconds: float) -> bool:
    """Extend this process's lease; False if it no longer holds the run."""
    with session_scope(engine) as session:
        return _fence(session, experiment_id, owner, lease_seconds=lease_seconds) is not None


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
        now = _fence(session, experiment_id, owner, lease_seconds=lease_seconds)
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
            _store_checkpoint(session, experiment_id, metrics.epoch, checkpoint)
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
        if _fence(session, evaluation.experiment_id, owner, lease_seconds=None) is None:
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
        now = _fence(session, experiment_id, owner, lease_seconds=None)
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
        if _fence(session, experiment_id, owner, lease_seconds=None) is None:
            raise LeaseLost(experiment_id)
        for table in (EpochRecord, Checkpoint):
            session.exec(
                delete(table).where(
                    col(table.experiment_id) == experiment_id, col(table.epoch) > to_epoch
                )
            )
        refresh_summary(session, experiment_id)


def requested_stop(engine: Engine, experiment_id: str) -> Status | None:
    """What someone asked the run to become: cancelled (also once it is deleted), paused, or
    None to train on."""
    with session_scope(engine) as session:
        experiment = session.get(Experiment, experiment_id)
        if experiment is None or experiment.cancel_requested:
            return Status.cancelled
        return Status.paused if experiment.pause_requested else None


def release(engine: Engine, experiment_id: str, owner: str, checkpoint: bytes | None) -> None:
    """Hand an interrupted run back to the queue (paused instead, to wait for a resume, if a
    pause was asked), with the weights reached so far; the sweeper publishes a queued one
    again (its message is acknowledged, not handed back to the broker, which would give it
    straight back to the worker that is stopping).

    The checkpoint replaces the one of the last finished epoch, so the next attempt trains the
    interrupted epoch again from these weights: only the batch in progress is lost.
    """
    with session_scope(engine) as session:
        if _fence(session, experiment_id, owner, lease_seconds=None) is None:
            raise LeaseLost(experiment_id)
        if checkpoint is not None:
            _store_reached(session, experiment_id, checkpoint)
        session.exec(
            update(Experiment)
            .where(col(Experiment.id) == experiment_id)
            .values(
                status=RELEASED_STATUS,
                lease_owner=None,
                lease_expires_at=None,
                dispatched_at=None,
                pause_requested=False,
            )
        )


def undispatch(engine: Engine, experiment_id: str) -> None:
    """Mark a queued run as holding no message, so that the sweeper publishes it again: a
    stopping worker took its message and will not run it."""
    with session_scope(engine) as session:
        session.exec(
            update(Experiment)
            .where(col(Experiment.id) == experiment_id, col(Experiment.status) == Status.queued)
            .values(dispatched_at=None)
        )


def finish(
    engine: Engine,
    experiment_id: str,
    owner: str,
    status: Status,
    error: str | None = None,
    *,
    checkpoint: bytes | None = None,
) -> None:
    """Record how a run ended, with the weights it stopped at if not saved yet (as of its last
    finished epoch); its newest checkpoint stays as the trained model."""
    with session_scope(engine) as session:
        ended = session.exec(
            update(Experiment)
            .where(col(Experiment.id) == experiment_id, col(Experiment.lease_owner) == owner)
            .values(
                status=status,
                error=error,
                finished_at=db_now(session),
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        if ended.rowcount == 0:
            raise LeaseLost(experiment_id)
        if checkpoint is not None:
            _store_reached(session, experiment_id, checkpoint)
        newest = session.exec(
            select(func.max(Checkpoint.epoch)).where(Checkpoint.experiment_id == experiment_id)
        ).one()
        if newest is not None:
            session.exec(
                delete(Checkpoint).where(
                    col(Checkpoint.experiment_id) == experiment_id, col(Checkpoint.epoch) < newest
                )
            )


def _store_reached(session: Session, experiment_id: str, data: bytes) -> None:
    """Store the weights a stopped run reached as the checkpoint of its last finished epoch
    (replacing the one saved then): a resume trains on from them."""
    epochs_done = session.exec(
        select(Experiment.epochs_done).where(Experiment.id == experiment_id)
    ).one()
    _store_checkpoint(session, experiment_id, epochs_done, data)


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


def _expired(expires_at: Any, now: Any) -> bool:
    if expires_at is None:
        return True
    if expires_at.tzinfo is None:  # SQLite hands back naive UTC
        now = now.replace(tzinfo=None)
    return bool(expires_at < now)


def _fence(
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


def _store_checkpoint(session: Session, experiment_id: str, epoch: int, data: bytes) -> None:
    values = {
        "experiment_id": experiment_id,
        "epoch": epoch,
        "data": data,
        "sha256": hashlib.sha256(data).hexdigest(),
        "created_at": utcnow(),
    }
    upsert(session, Checkpoint, values, keys=("experiment_id", "epoch"))
