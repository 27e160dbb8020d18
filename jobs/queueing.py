"""Getting stored experiments to the workers: publish after commit, and a sweeper that
re-publishes what a broker outage or a crash lost and requeues runs whose worker vanished.

A message is only a wake-up call carrying an id: publishing twice is harmless, because a run
is claimed in the database exactly once. The database decides what runs: a queued row is
published again whenever the broker may have lost its message, whatever became of it (a broker
restarted empty, a worker killed between taking it and claiming the run), as many as the broker
is missing.

A broker that is down is waited on once, not once a run: after it refuses a publish, this
process publishes nothing to it for ``QUIET_AFTER_REFUSAL_S`` (a request that publishes many
runs answers at once; its runs wait, queued, for the sweeper), and a sweeper pass ends its
publishing at the first refusal."""

import logging
import threading
import time

from celery import Celery

from store.db import Engine
from store.dispatch import mark_published, unsent
from store.transitions import requeue_stale

log = logging.getLogger(__name__)

TRAIN_TASK = "convlab.train"
QUEUE = "convlab"
QUIET_AFTER_REFUSAL_S = 2.0
"""Seconds after a broker refused a publish in which this process does not try it again (one
try costs Celery's publish retries, about 0.6 s)."""


class _Refusals:
    """When each broker (by URL) last refused a publish or a count, in this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at: dict[str, float] = {}

    def recent(self, celery: Celery) -> bool:
        """Whether ``celery``'s broker refused less than QUIET_AFTER_REFUSAL_S ago."""
        with self.lock:
            refused = self.at.get(str(celery.conf.broker_url))
        return refused is not None and time.monotonic() - refused < QUIET_AFTER_REFUSAL_S

    def note(self, celery: Celery, refused: bool) -> None:
        with self.lock:
            if refused:
                self.at[str(celery.conf.broker_url)] = time.monotonic()
            else:
                self.at.pop(str(celery.conf.broker_url), None)


_refusals = _Refusals()


def publish(engine: Engine, celery: Celery, experiment_id: str) -> bool:
    """Send the experiment's message and note when; False (row left for the sweeper) if the
    broker did not take it, or refused another one moments ago."""
    if _refusals.recent(celery):
        return False
    try:
        celery.send_task(TRAIN_TASK, args=[experiment_id], queue=QUEUE)
    except Exception as exc:
        _refusals.note(celery, refused=True)
        log.warning(
            "broker did not take experiment %s (%s); the sweeper will retry", experiment_id, exc
        )
        return False
    _refusals.note(celery, refused=False)
    mark_published(engine, experiment_id)
    return True


def requeue_abandoned(engine: Engine, *, lease_seconds: float) -> list[str]:
    """Running experiments whose lease expired go back to the queue (or become paused if a
    pause was asked), counting a lost worker; they resume from their last checkpoint."""
    requeued = requeue_stale(engine, lease_seconds=lease_seconds)
    for experiment_id in requeued:
        log.warning("experiment %s: its worker stopped renewing its lease; requeued", experiment_id)
    return requeued


def publish_pending(
    engine: Engine, celery: Celery, *, grace_seconds: float, horizon_seconds: float
) -> list[str]:
    """Publish queued experiments whose message the broker may not hold, until the broker
    refuses one (the rest wait for the next pass).

    Those never published (older than ``grace_seconds``, so a submit still publishing is left
    alone), then, of those last published longer than ``horizon_seconds`` ago, oldest first, as
    many as the broker holds fewer messages than there are published queued runs (so many were
    lost).
    """
    runs = unsent(engine, grace_seconds=grace_seconds, horizon_seconds=horizon_seconds)
    pending, lost, sent = runs.never, runs.stale, runs.published
    done = _publish_in_turn(engine, celery, pending)
    if len(done) < len(pending) or not lost:
        return done
    sent += len(done)
    held = _messages_held(celery)
    missing = 0 if held is None else max(sent - held, 0)
    if missing:
        log.warning(
            "the broker holds %d message(s) for %d published queued run(s); publishing the %d "
            "oldest again",
            held,
            sent,
            min(missing, len(lost)),
        )
    return done + _publish_in_turn(engine, celery, lost[:missing])


def _publish_in_turn(engine: Engine, celery: Celery, experiment_ids: list[str]) -> list[str]:
    """Publish these in turn until the broker refuses one; those it took."""
    taken: list[str] = []
    for experiment_id in experiment_ids:
        if not publish(engine, celery, experiment_id):
            left = len(experiment_ids) - len(taken)
            log.warning("the broker is down: %d run(s) wait for the next pass", left)
            break
        taken.append(experiment_id)
    return taken


def _messages_held(celery: Celery) -> int | None:
    """How many messages wait in the broker's queue (None if it cannot be asked at once)."""
    if _refusals.recent(celery):
        return None
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0)  # no retries: a pass never waits
            declared = connection.default_channel.queue_declare(queue=QUEUE, durable=True)
    except Exception as exc:
        _refusals.note(celery, refused=True)
        log.warning("could not count the broker's messages (%s)", exc)
        return None
    return int(declared.message_count)
