"""The worker's Celery app (``jobs.broker``'s, on this process's settings) and its signal
handlers: migrate before serving, fresh database connections in each pool process, and a
graceful stop of the job in progress on Ctrl-C or SIGTERM.

TensorFlow (or the backend chosen, ``worker.backends``) is never imported here: the prefork
parent forks pool processes, and only those (which never fork) load it, on their first job, and
stay warm for the next ones. The backend is chosen on import, before anything loads Keras.
"""

import os
import sys
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_shutting_down

from core.config import get_settings
from jobs.broker import declare_queue, make_celery
from store.db import get_engine, migrate
from worker.backends import choose, refusal
from worker.cores import run_at_niceness
from worker.heartbeat import Heartbeat, refuse_without_gpu
from worker.slots import claim_slot, slot_count
from worker.stop import print_stacks_on_signal, stop_pool_processes

choose(get_settings().keras_backend)  # before any import of Keras, here or in a pool process
app = make_celery(get_settings())
app.conf.worker_concurrency = slot_count(get_settings())  # a training process per slot


@worker_init.connect
def _migrate_before_serving(**_: Any) -> None:
    """Refuse to start on a Keras backend that is unknown or not installed, or without a GPU
    if one is required; print stacks on ``STACKS_SIGNAL`` (here and in the pool processes
    forked later); bring the schema up to date and declare the embedded broker's queue before
    the first job (the API does the same)."""
    refused = refusal(get_settings().keras_backend) or refuse_without_gpu(get_settings())
    if refused is not None:
        print(f"convlab worker: {refused}", file=sys.stderr, flush=True)
        os._exit(2)  # Celery logs and swallows a signal handler's exceptions
    print_stacks_on_signal()
    migrate()
    declare_queue(app, get_settings())


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    """A forked pool process must not share the parent's database connections; it trains at
    a lower CPU priority than the API (``CONVLAB_WORKER_NICE``); it starts beating for itself
    (``GET /workers``), for the slot its pool index gives it (``worker.slots``: pinned to its
    GPU before TensorFlow loads)."""
    get_engine().dispose(close=False)
    slot = claim_slot(get_settings())
    run_at_niceness(get_settings().worker_nice)  # before its threads start: they inherit it
    Heartbeat(get_settings(), slot).start()


@worker_shutting_down.connect
def _stop_jobs_in_progress(**_: Any) -> None:
    """Ctrl-C or SIGTERM: jobs stop at their next batch and go back to the queue."""
    stop_pool_processes()
