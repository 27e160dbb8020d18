"""The Celery app: JSON messages carrying an experiment id, one job at a time per process.

A training process that dies (kill -9, out of memory) is replaced by the pool, and its message
goes back to the queue (acks_late, reject_on_worker_lost); one that has trained
``worker_max_jobs`` jobs or grown past ``worker_max_memory_mb`` is recycled after its job.

TensorFlow is never imported here: the prefork parent forks pool processes, and only those
(which never fork) load TensorFlow, on their first job, and stay warm for the next ones.
"""

from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_shutting_down

from core.config import Settings, get_settings
from jobs.queueing import QUEUE
from store.db import get_engine, migrate
from worker.stop import stop_pool_processes


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
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    if broker_url.startswith(("redis://", "rediss://")):
        app.conf.broker_transport_options = {
            "visibility_timeout": settings.redis_visibility_timeout_s
        }
    return app


app = make_celery(get_settings())


@worker_init.connect
def _migrate_before_serving(**_: Any) -> None:
    """Bring the schema up to date before the first job (the API does the same)."""
    migrate()


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    """A forked pool process must not share the parent's database connections."""
    get_engine().dispose(close=False)


@worker_shutting_down.connect
def _stop_jobs_in_progress(**_: Any) -> None:
    """Ctrl-C or SIGTERM: jobs stop at their next batch and go back to the queue."""
    stop_pool_processes()
