"""The Celery app as both sides need it: the API publishes with it, the worker consumes with it
(``worker.celery_app`` adds the worker's signal handlers), so publishing imports nothing of
the worker.

JSON messages carrying an experiment id, one job at a time per process. A training process
that dies (kill -9, out of memory) is replaced by the pool, and its message goes back to the
queue (acks_late, reject_on_worker_lost); one that has trained ``worker_max_jobs`` jobs or
grown past ``MAX_MEMORY_MB`` is recycled after its job."""

from celery import Celery

from core.config import Settings
from jobs.queueing import QUEUE
from store.db import sqlite_file_lock, sqlite_file_of

MAX_MEMORY_MB = 6144
"""A training process grown past this after a job is replaced (Keras grows about 10 MB a job)."""
VISIBILITY_TIMEOUT_S = 7 * 24 * 3600
"""Redis hands an unacknowledged job to another worker after this: above any job's length."""


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``' broker, configured for long, crash-sensitive jobs."""
    broker_url = settings.resolved_broker_url
    app = Celery("convlab", broker=broker_url, include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=settings.worker_max_jobs,
        worker_max_memory_per_child=MAX_MEMORY_MB * 1024,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    if settings.broker_is_redis:
        app.conf.broker_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    return app


def declare_queue(app: Celery, settings: Settings) -> None:
    """Create the embedded broker's tables and queue before this process publishes or consumes.
    Kombu's SQLAlchemy transport creates them on first use, guarded by a thread lock only: two
    workers starting on a new SQLite broker both inserted the queue's row, and the second died
    with an IntegrityError. A lock beside the file lets one create them and the others find
    them. A Redis broker needs nothing declared."""
    url = settings.resolved_broker_url
    if not url.startswith("sqla+sqlite:"):
        return
    database = sqlite_file_of(url.removeprefix("sqla+"))
    assert database, f"no SQLite file in the broker URL {url}"
    with sqlite_file_lock(database), app.connection_for_write() as connection:
        connection.default_channel.queue_declare(queue=QUEUE, durable=True)
