"""Getting stored experiments to the workers: publish after commit, and a sweeper that
re-publishes what a broker outage or a crash lost and requeues runs whose worker vanished.

A message is only a wake-up call carrying an id: publishing twice is harmless, because a run
is claimed in the database exactly once. The database decides what runs: a queued row is
published again whenever the broker may have lost its message, whatever became of it (a broker
restarted empty, a worker killed between taking it and claiming the run)."""

import logging
from datetime import timedelta

from celery import Celery
from sqlalchemy import Engine, func, update
from sqlmodel import col, select

from store.clock import db_now, takeover_cutoff
from store.db import session_scope
from store.runs import RELEASED_STATUS
from store.tables import Experiment, Status

log = logging.getLogger(__name__)

TRAIN_TASK = "convlab.train"
QUEUE = "convlab"


def publish(engine: Engine, celery: Celery, experiment_id: str) -> bool:
    """Send the experiment's message and note when; False (row left for the sweeper) if the
    broker did not take it."""
    try:
        celery.send_task(TRAIN_TASK, args=[experiment_id], queue=QUEUE)
    except Exception as exc:
        log.warning(
            "broker did not take experiment %s (%s); the sweeper will retry", experiment_id, exc
        )
        return False
    with session_scope(engine) as session:
        session.exec(
            update(Experiment)
            .where(col(Experiment.id) == experiment_id)
            .values(dispatched_at=db_now(session))
        )
    return True


def requeue_abandoned(engine: Engine, *, lease_seconds: float) -> list[str]:
    """Running experiments whose lease expired (their machine or process is gone) go back to
    the queue (or become paused if a pause was asked), counting a lost worker; they resume
    from their last checkpoint.

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
                    lease_owner=None,
                    lease_expires_at=None,
                    dispatched_at=None,
                    workers_lost=col(Experiment.workers_lost) + 1,
                )
            )
            if moved.rowcount:
                requeued.append(experiment_id)
    for experiment_id in requeued:
        log.warning("experiment %s: its worker stopped renewing its lease; requeued", experiment_id)
    return requeued


def publish_pending(
    engine: Engine, celery: Celery, *, grace_seconds: float, horizon_seconds: float
) -> list[str]:
    """Publish queued experiments whose message the broker may not hold.

    Those never published (older than ``grace_seconds``, so a submit still publishing is left
    alone), and, when the broker holds fewer messages than there are queued runs (so one was
    lost), those last published longer than ``horizon_seconds`` ago, oldest first.
    """
    with session_scope(engine) as session:
        now = db_now(session)
        never = (
            col(Experiment.dispatched_at).is_(None),
            col(Experiment.created_at) < now - timedelta(seconds=grace_seconds),
        )
        pending = list(
            session.exec(
                select(Experiment.id).where(Experiment.status == Status.queued, *never)
            ).all()
        )
        stale = col(Experiment.dispatched_at) < now - timedelta(seconds=horizon_seconds)
        lost = list(
            session.exec(
                select(Experiment.id)
                .where(Experiment.status == Status.queued, stale)
                .order_by(col(Experiment.dispatched_at))
            ).all()
        )
        queued = session.exec(select(func.count()).where(Experiment.status == Status.queued)).one()
    held = _messages_held(celery) if lost else None  # the broker is asked only when needed
    if held is None or held >= queued:
        lost = []
    if lost:
        log.warning(
            "the broker holds %d message(s) for %d queued run(s); publishing %d again",
            held,
            queued,
            len(lost),
        )
    return [
        experiment_id
        for experiment_id in [*pending, *lost]
        if publish(engine, celery, experiment_id)
    ]


def _messages_held(celery: Celery) -> int | None:
    """How many messages wait in the broker's queue (None if it cannot be asked)."""
    try:
        with celery.connection_for_write() as connection:
            declared = connection.default_channel.queue_declare(queue=QUEUE, durable=True)
    except Exception as exc:
        log.warning("could not count the broker's messages (%s)", exc)
        return None
    return int(declared.message_count)
