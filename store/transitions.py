"""Every change of an experiment's status, in one place: a worker claims a run under a lease,
releases it or finishes it (``store.runs`` holds what it writes meanwhile); the API pauses,
resumes and cancels; the sweeper requeues runs whose worker vanished; a search stores a trial
its spec refuses as failed. Lease times are the database's (``store.clock``), never a host's."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, case, delete, func, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from models.accelerator import Accelerator
from models.status import Status
from store.clock import db_now, takeover_cutoff
from store.db import session_scope
from store.dispatch import undispatch
from store.experiments import Conflict
from store.placement import fits
from store.queue import below_cap, read_line, serve_order
from store.runs import LeaseLost, fence, store_checkpoint
from store.tables import Attempt, Checkpoint, Experiment, utcnow

HolderGone = Callable[[str], bool]
"""Whether the process a lease owner names is known to be gone."""

RELEASED_STATUS = case((col(Experiment.pause_requested), Status.paused), else_=Status.queued)
"""Where a run goes when its process lets go of it (or is gone): paused if a pause was asked,
else back to the queue."""
YIELDED = case((col(Experiment.yield_requested) & ~col(Experiment.pause_requested), 1), else_=0)
"""1 when a run let go of its worker because it was asked to yield (and not to pause)."""


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

RUNNING_LOCKS = 7210253
"""The first key of PostgreSQL's advisory locks on users' running runs (the second: a hash of
the user's name), held by a claim while it checks the running cap."""


def claim_next(
    engine: Engine,
    woken_for: str,
    owner: str,
    *,
    lease_seconds: float,
    max_lost: int,
    max_running_per_user: int | None = None,
    accelerator: Accelerator | None = None,
    environment: dict[str, Any] | None = None,
    holder_gone: HolderGone | None = None,
) -> Claim | None:
    """Take the run this process should train now, whichever message woke it: one it holds
    already (a claim whose answer an outage lost), else ``woken_for`` if it is running and its
    holder is gone, else the first queued run in the fair-share order (``store.queue``) whose
    resources ``accelerator`` satisfies (``store.placement``) and whose user has fewer than
    ``max_running_per_user`` running; None if there is none. Then ``woken_for``, if it still
    waits and fits this worker (its user at the cap), is left for the sweeper to publish again:
    its message is spent. One for another accelerator keeps its message, and is published
    again after ``CONVLAB_REDISPATCH_AFTER_S``, for a worker it fits."""
    terms: dict[str, Any] = {
        "lease_seconds": lease_seconds,
        "max_lost": max_lost,
        "max_running_per_user": max_running_per_user,
        "accelerator": accelerator,
        "environment": environment,
        "holder_gone": holder_gone,
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
            line = read_line(session, taken_by=accelerator)
            order = serve_order(below_cap(line, max_running_per_user))
        if not order:
            break
        for run in order[:CLAIM_TRIES]:
            if (claimed := claim(engine, run.id, owner, **terms)) is not None:
                return claimed
    undispatch(engine, woken_for, taken_by=accelerator)
    return None


def claim(
    engine: Engine,
    experiment_id: str,
    owner: str,
    *,
    lease_seconds: float,
    max_lost: int,
    max_running_per_user: int | None = None,
    accelerator: Accelerator | None = None,
    environment: dict[str, Any] | None = None,
    holder_gone: HolderGone | None = None,
    queued_too: bool = True,
) -> Claim | None:
    """Take a queued run (unless not ``queued_too``), or a running one whose holder is gone (or
    is this process); None if neither. Each claim is an attempt, recorded with the process, its
    ``accelerator`` and its ``environment`` (``worker.environment``). A running run's holder
    is gone once its lease expired, or sooner if ``holder_gone`` says so of it (a worker knows
    the processes of its own machine: ``worker.leases.is_gone``).

    Taking over from a dead holder counts a lost worker; at ``max_lost`` the run fails instead.
    A run whose resources ``accelerator`` does not satisfy is left alone. A queued run starts
    only while its user has fewer than ``max_running_per_user`` running (``_lock_running_of``).
    """
    with session_scope(engine) as session:
        seen = session.get(Experiment, experiment_id)
        if seen is None:
            return None
        capped = seen.status == Status.queued and max_running_per_user is not None
        if capped:
            _lock_running_of(session, seen.owner)
        now, cutoff = takeover_cutoff(session, lease_seconds)
        expired = cutoff is not None and _expired(seen.lease_expires_at, cutoff)
        holder = seen.lease_owner
        gone = holder is None or (holder_gone is not None and holder_gone(holder))
        took_over = seen.status == Status.running and (expired or gone)
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
        if accelerator is not None:
            unchanged.append(fits(accelerator))
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
        if capped and max_running_per_user is not None:
            unchanged.append(_running_below(seen.owner, max_running_per_user))
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


def _lock_running_of(session: Session, owner: str | None) -> None:
    """Hold, until this claim commits, the right to start one of ``owner``'s runs, so that two
    claims at the same instant never both count the same running runs against the cap (runs
    without an owner, auth off, count as one user's). On PostgreSQL a transaction-scoped
    advisory lock on the user's running runs: the second claim waits until the first commits,
    and its update (a new snapshot under READ COMMITTED) counts the first's run; its clock is
    read after the wait, so its start is never before the end of the run whose finish freed
    the place. On SQLite, whose writers take turns, the update that counts is itself the
    write, and nothing is locked here."""
    if session.get_bind().dialect.name == "postgresql":
        key = func.hashtext(owner or "")
        session.exec(select(func.pg_advisory_xact_lock(RUNNING_LOCKS, key)))


def _running_below(owner: str | None, cap: int) -> ColumnElement[bool]:
    """The claim's condition that ``owner`` has fewer than ``cap`` runs running."""
    other = aliased(Experiment)
    running = (
        select(func.count())
        .select_from(other)
        .where(
            col(other.status) == Status.running,
            col(other.owner).is_not_distinct_from(owner),
        )
        .scalar_subquery()
    )
    return running < cap


def release(engine: Engine, experiment_id: str, owner: str, checkpoint: bytes | None) -> None:
    """Hand an interrupted run back to the queue (paused instead, to wait for a resume, if a
    pause was asked; counting a preemption if it was asked to yield), with the weights reached
    so far; the sweeper publishes a queued one again (its message is acknowledged, not handed
    back to the broker, which would give it straight back to the worker that is stopping).

    The checkpoint replaces the one of the last finished epoch, so the next attempt trains the
    interrupted epoch again from these weights: only the batch in progress is lost.
    """
    with session_scope(engine) as session:
        if fence(session, experiment_id, owner, lease_seconds=None) is None:
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
                preemptions=col(Experiment.preemptions) + YIELDED,
                yield_requested=False,
                **_back_in_line(session),
            )
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


def pause(session: Session, experiment: Experiment) -> Experiment:
    """Pause at once if queued (a worker that takes its message will not claim it); ask the
    trainer to checkpoint and stop if running; Conflict otherwise."""
    queued = _move(session, experiment, Status.queued, status=Status.paused)
    if not queued and not _move(session, experiment, Status.running, pause_requested=True):
        raise Conflict(
            f"Experiment {experiment.id} is {experiment.status}; "
            "only queued or running experiments can be paused."
        )
    return experiment


def resume(session: Session, experiment: Experiment) -> Experiment:
    """Put a paused experiment back in the queue (the caller publishes it); Conflict unless
    it is paused."""
    if not _move(
        session,
        experiment,
        Status.paused,
        status=Status.queued,
        pause_requested=False,
        dispatched_at=None,
        **_back_in_line(session),
    ):
        raise Conflict(
            f"Experiment {experiment.id} is {experiment.status}, not paused; "
            "only a paused experiment can be resumed."
        )
    return experiment


def cancel(session: Session, experiment: Experiment) -> Experiment:
    """Cancel at once if queued or paused; ask the trainer to stop if running; Conflict if
    finished."""
    now = utcnow()
    waiting = (Status.queued, Status.paused)
    queued = session.exec(
        update(Experiment)
        .where(col(Experiment.id) == experiment.id, col(Experiment.status).in_(waiting))
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
                "only queued, running or paused experiments can be cancelled."
            )
    session.commit()
    session.refresh(experiment)
    return experiment


def requeue_stale(engine: Engine, *, lease_seconds: float) -> list[str]:
    """Running experiments whose lease expired (their machine or process is gone) go back to
    the queue (or become paused if a pause was asked), counting a lost worker; the ids moved.

    Right after the database server restarts, no lease counts as expired for one lease period:
    its holders could not renew while it was down.
    """
    with session_scope(engine) as session:
        _, now = takeover_cutoff(session, lease_seconds)
        if now is None:
            return []
        expired = session.exec(
            select(Experiment.id).where(
                Experiment.status == Status.running, col(Experiment.lease_expires_at) < now
            )
        ).all()
        requeued = []
        for experiment_id in expired:
            moved = session.exec(
                update(Experiment)
                .where(
                    col(Experiment.id) == experiment_id,
                    col(Experiment.status) == Status.running,
                    col(Experiment.lease_expires_at) < now,
                )
                .values(
                    status=RELEASED_STATUS,
                    pause_requested=False,
                    yield_requested=False,
                    lease_owner=None,
                    lease_expires_at=None,
                    dispatched_at=None,
                    workers_lost=col(Experiment.workers_lost) + 1,
                    **_back_in_line(session),
                )
            )
            if moved.rowcount:
                requeued.append(experiment_id)
    return requeued


def ask_to_yield(engine: Engine, running_id: str, waiting_id: str, *, max_preemptions: int) -> bool:
    """Ask the running run ``running_id`` to give its worker up for the queued run
    ``waiting_id`` (``jobs.preemption``): both in one transaction, only while the first still
    runs unasked, preempted fewer than ``max_preemptions`` times, and the second is still
    queued and has asked none; whether it was asked."""
    with session_scope(engine) as session:
        waiter = session.exec(
            update(Experiment)
            .where(
                col(Experiment.id) == waiting_id,
                col(Experiment.status) == Status.queued,
                ~col(Experiment.preempt_asked),
            )
            .values(preempt_asked=True)
        )
        if waiter.rowcount == 0:
            return False
        asked = session.exec(
            update(Experiment)
            .where(
                col(Experiment.id) == running_id,
                col(Experiment.status) == Status.running,
                ~col(Experiment.yield_requested),
                ~col(Experiment.pause_requested),
                ~col(Experiment.cancel_requested),
                col(Experiment.preemptions) < max_preemptions,
            )
            .values(yield_requested=True)
        )
        if asked.rowcount == 0:
            session.rollback()
            return False
    return True


def fail_refused(experiment: Experiment, reason: str) -> None:
    """Store a new experiment (not yet flushed) as failed for ``reason``: a search's trial whose
    point the spec or the budget refuses."""
    experiment.status, experiment.error = Status.failed, reason
    experiment.finished_at = experiment.created_at


def _store_reached(session: Session, experiment_id: str, data: bytes) -> None:
    """Store the weights a stopped run reached as the checkpoint of its last finished epoch
    (replacing the one saved then): a resume trains on from them."""
    epochs_done = session.exec(
        select(Experiment.epochs_done).where(Experiment.id == experiment_id)
    ).one()
    store_checkpoint(session, experiment_id, epochs_done, data)


def _expired(expires_at: Any, now: Any) -> bool:
    if expires_at is None:
        return True
    if expires_at.tzinfo is None:  # SQLite hands back naive UTC
        now = now.replace(tzinfo=None)
    return bool(expires_at < now)


def _back_in_line(session: Session) -> dict[str, Any]:
    """The values of a run going back to the queue: its wait, and its one preemption request
    (``jobs.preemption``), start again now."""
    return {"queued_at": db_now(session), "preempt_asked": False}


def _move(session: Session, experiment: Experiment, was: Status, /, **values: Any) -> bool:
    """Change the experiment if its status ``was`` this, committing; False if it was not."""
    moved = session.exec(
        update(Experiment)
        .where(col(Experiment.id) == experiment.id, col(Experiment.status) == was)
        .values(**values)
    )
    session.commit()
    session.refresh(experiment)
    return moved.rowcount == 1
