"""Getting stored experiments to the workers: publish after commit, and a sweeper that
re-publishes what a broker outage or a crash lost and requeues runs whose worker vanished.

A message is only a wake-up call carrying an id: publishing twice is harmless, because a run
is claimed in the database exactly once."""

import logging
from datetime import timedelta

from celery import Celery
from sqlalchemy import Engine, update
from sqlmodel import col, select

from core.db import session_scope
from core.tables import Experiment, Status, utcnow

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
            .values(dispatched_at=utcnow())
        )
    return True


def requeue_abandoned(engine: Engine) -> list[str]:
    """Running experiments whose lease expired (their machine or process is gone) go back to
    the queue, counting a lost worker; they resume from their last checkpoint."""
    now = utcnow()
    with session_scope(engine) as session:
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
                    status=Status.queued,
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


def publish_pending(engine: Engine, celery: Celery, *, grace_seconds: float) -> list[str]:
    """Publish queued experiments whose message never reached the broker (older than
    ``grace_seconds``, so a submit still publishing is left alone)."""
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    with session_scope(engine) as session:
        pending = session.exec(
            select(Experiment.id).where(
                Experiment.status == Status.queued,
                col(Experiment.dispatched_at).is_(None),
                col(Experiment.created_at) < cutoff,
            )
        ).all()
    return [experiment_id for experiment_id in pending if publish(engine, celery, experiment_id)]
