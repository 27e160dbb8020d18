"""The FastAPI app: experiments over HTTP, stored in SQL, trained by Celery workers.

This process never imports TensorFlow; it starts in well under a second.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware

from api.auth import BearerAuth
from api.errors import (
    database_unreachable,
    invalid_cursor,
    invalid_request,
    invalid_spec,
    method_not_allowed,
    not_found,
    status_conflict,
)
from api.limits import HostCheck, MinuteRate, NulInUrl, PredictionSlots, ReadRate
from api.metrics import ApiMetrics, RequestMetrics
from api.predictor import Predictor
from api.routes import catalogue, compare, datasets, experiments, studies, ui, usage, workers
from api.shared_counts import counts_for
from api.streams import EventStreams
from core.config import Settings, get_settings
from jobs.broker import declare_queue, make_celery
from jobs.notify import deliver_due
from jobs.retention import keep_storage
from jobs.sweeper import sweep
from models.datasets import DATASETS
from models.errors import SpecError
from store.db import get_engine, migrate
from store.experiments import Conflict, InvalidCursor
from store.outages import DATABASE_ERRORS
from store.singleton import Singleton

log = logging.getLogger(__name__)
AUTH_THREADS = 4
"""Threads for token lookups, apart from the sync routes': a token check never waits behind a
slow route."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """An app for ``settings`` (default: from the environment); migrates the DB on start-up."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate(app.state.engine)
        declare_queue(app.state.celery, settings)
        # Sync routes run in these threads; more of them only take turns at the GIL.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        app.state.streams.close_on_exit_signals()  # uvicorn's handlers are in place by now
        engine, celery = app.state.engine, app.state.celery
        lock = Singleton(engine)  # however many API processes there are, one runs the loops
        loops = [
            asyncio.create_task(
                _every_sweep(settings, "sweeper", lock, sweep, engine, celery, settings)
            ),
            asyncio.create_task(
                _every_sweep(settings, "notifier", lock, deliver_due, engine, settings)
            ),
            asyncio.create_task(
                _every_sweep(settings, "retention", lock, keep_storage, engine, settings)
            ),
        ]
        if app.state.metrics.shared:
            counting = _every_sweep(settings, "epoch counter", lock, _count_epochs, app, lock)
            loops.append(asyncio.create_task(counting))
        yield
        app.state.predictor.close()
        for loop in loops:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        lock.release()  # another process takes the loops over at its next pass
        await app.state.counts.close()

    app = FastAPI(
        title="convlab",
        summary="Train the CIFAR-10 chapter's CNN variants as queued jobs; read their histories.",
        description="The HTTP contract, every endpoint with its answers and limits, is the "
        "repository's docs/API.md.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_exception_handler(404, not_found)
    app.add_exception_handler(405, method_not_allowed)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(SpecError, invalid_spec)
    app.add_exception_handler(InvalidCursor, invalid_cursor)
    app.add_exception_handler(Conflict, status_conflict)
    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, database_unreachable)
    app.state.settings = settings
    DATASETS.use(settings.resolved_data_dir)  # specs may name its custom datasets
    app.state.engine = get_engine(settings.resolved_database_url)
    app.state.celery = make_celery(settings)
    app.state.counts = counts = counts_for(settings)  # the per-user limits' counts
    app.state.submissions = MinuteRate(settings.max_submissions_per_minute, "submissions", counts)
    app.state.streams = EventStreams(settings, counts)
    app.state.uploads = anyio.CapacityLimiter(datasets.UPLOAD_CHECKS)
    app.state.predictor = Predictor()
    app.state.prediction_slots = PredictionSlots(settings.max_predictions_per_user, counts)
    app.state.metrics = ApiMetrics(app.state.engine, workers_seen_s=settings.workers_seen_s)
    app.add_middleware(ReadRate, rate=MinuteRate(settings.max_reads_per_minute, "reads", counts))
    app.add_middleware(
        BearerAuth,
        engine=app.state.engine,
        enabled=settings.auth,
        threads=AUTH_THREADS,
        trust_seconds=settings.token_cache_seconds,
    )
    app.add_middleware(
        datasets.UploadBodyLimit,
        max_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_dataset_bytes,
    )
    app.add_middleware(NulInUrl)
    if settings.allowed_hosts or not settings.auth:
        app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # outermost: sees every answer
    app.include_router(experiments.router)
    app.include_router(studies.router)
    app.include_router(compare.router)
    app.include_router(catalogue.router)
    app.include_router(datasets.router)
    app.include_router(workers.router)
    app.include_router(usage.router)
    app.include_router(ui.router)
    app.mount("/ui", ui.assets, name="ui")
    return app


async def _every_sweep(
    settings: Settings, name: str, lock: Singleton, task: Callable[..., Any], *args: Any
) -> None:
    """Run ``task(*args)`` in a thread every sweep interval: the sweeper (requeue runs whose
    worker vanished, publish what the broker missed) and, each in a loop of its own so that
    neither a slow receiver nor a long VACUUM delays it, the notifier (``jobs.notify``) and the
    retention pass (``jobs.retention``). Only in the API process that holds ``lock``; the
    others try to take it at every pass (a killed holder's lock is free at once, so another
    process takes over within one interval)."""
    while True:
        await asyncio.sleep(settings.sweep_interval_s)
        try:
            await asyncio.to_thread(_when_held, lock, task, *args)
        except Exception:
            log.exception("%s pass failed; retrying in %ss", name, settings.sweep_interval_s)


def _count_epochs(app: FastAPI, lock: Singleton) -> None:
    """The epochs finished since the last pass, counted by the lock's holder alone (the API's
    processes sum their counts), from when it took the lock."""
    app.state.metrics.epochs.observe_new(counting_since=lock.taken_at)


def _when_held(lock: Singleton, task: Callable[..., Any], *args: Any) -> None:
    """``task(*args)`` if this process holds ``lock`` (taking it when it is free)."""
    if lock.held():
        task(*args)
