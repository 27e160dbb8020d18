"""The API's sweeper: one pass repairs what crashes and outages left behind."""

import logging

from celery import Celery

from core.config import Settings
from jobs.preemption import preempt
from jobs.queueing import publish_pending, requeue_abandoned
from jobs.search import advance, trials_to_come
from jobs.verify import settle_all
from store.db import Engine
from store.searches import searches

log = logging.getLogger(__name__)


def sweep(engine: Engine, celery: Celery, settings: Settings) -> None:
    """Requeue runs whose worker vanished, publish what the broker never got, ask running runs
    to yield to urgent ones that waited too long (``jobs.preemption``), keep unfinished
    searches going (a worker may have died before starting the next trial) and judge the
    verification reruns no worker judged."""
    requeue_abandoned(engine, lease_seconds=settings.lease_seconds)
    published = publish_pending(
        engine,
        celery,
        grace_seconds=settings.dispatch_grace_s,
        horizon_seconds=settings.redispatch_after_s,
    )
    if published:
        log.info("sweeper published %d experiment(s) the broker had not got", len(published))
    preempt(engine, settings)
    for study in searches(engine):
        if not trials_to_come(study):
            continue
        try:
            advance(engine, celery, settings, study.id)
        except Exception:  # one broken search must not stall the others
            log.exception("sweeper could not advance search %s", study.id)
    settle_all(engine)
