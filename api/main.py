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
    status_conflict,
)
from api.limits import BodySizeLimit, HostCheck, MinuteRate, NulInUrl, PredictionSlots, ReadRate
from api.metrics import ApiMetrics, RequestMetrics
from api.predictor import Predictor
from api.routes import (
    catalogue,
    evaluation,
    events,
    experiments,
    lifecycle,
    plots,
    studies,
    trained,
    ui,
    workers,
)
from api.streams import EventStreams
from core.config import Settings, get_settings
from jobs.broker import make_celery
from jobs.notify import deliver_due
from jobs.sweeper import sweep
from models.errors import SpecError
from store.db import get_engine, migrate
from store.experiments import Conflict, InvalidCursor
from store.outages import DATABASE_ERRORS

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """An app for ``settings`` (default: from the environment); migrates the DB on start-up."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate(app.state.engine)
        # Sync routes run in these threads; more of them only take turns at the GIL.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        app.state.streams.close_on_exit_signals()  # uvicorn's handlers are in place by now
        engine, celery = app.state.engine, app.state.celery
        loops = [
            asyncio.create_task(_every_sweep(settings, "sweeper", sweep, engine, celery, settings)),
            asyncio.create_task(_every_sweep(settings, "notifier", deliver_due, engine, settings)),
        ]
        yield
        app.state.predictor.close()
        for loop in loops:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    app = FastAPI(
        title="convlab",
        summary="Train the CIFAR-10 chapter's CNN variants as queued jobs; read their histories.",
        description="The HTTP contract, every endpoint with its answers and limits, is the "
        "repository's docs/API.md.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_exception_handler(405, method_not_allowed)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(SpecError, invalid_spec)
    app.add_exception_handler(InvalidCursor, invalid_cursor)
    app.add_exception_handler(Conflict, status_conflict)
    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, database_unreachable)
    app.state.settings = settings
    app.state.engine = get_engine(settings.resolved_database_url)
    app.state.celery = make_celery(settings)
    app.state.submissions = MinuteRate(settings.max_submissions_per_minute, "submissions")
    app.state.streams = EventStreams(settings)
    app.state.predictor = Predictor()
    app.state.prediction_slots = PredictionSlots(settings.max_predictions_per_user)
    app.state.metrics = ApiMetrics(app.state.engine)
    app.add_middleware(ReadRate, rate=MinuteRate(settings.max_reads_per_minute, "reads"))
    app.add_middleware(
        BearerAuth, engine=app.state.engine, enabled=settings.auth, threads=settings.auth_threads
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
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
    app.include_router(lifecycle.router)
    app.include_router(studies.router)
    app.include_router(catalogue.router)
    app.include_router(events.router)
    app.include_router(plots.router)
    app.include_router(evaluation.router)
    app.include_router(trained.router)
    app.include_router(workers.router)
    app.include_router(ui.router)
    app.mount("/ui", ui.assets, name="ui")
    return app


async def _every_sweep(settings: Settings, name: str, task: Callable[..., Any], *args: Any) -> None:
    """Run ``task(*args)`` in a thread every sweep interval: the sweeper (requeue runs whose
    worker vanished, publish what the broker missed) and, in a loop of its own so that a slow
    receiver never delays it, the notifier (``jobs.notify``)."""
    while True:
        await asyncio.sleep(settings.sweep_interval_s)
        try:
            await asyncio.to_thread(task, *args)
        except Exception:
            log.exception("%s pass failed; retrying in %ss", name, settings.sweep_interval_s)
