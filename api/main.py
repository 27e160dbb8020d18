"""The FastAPI app: experiments over HTTP, stored in SQL, trained by Celery workers.

This process never imports TensorFlow; it starts in well under a second.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.routes import catalogue, experiments
from core.config import Settings, get_settings
from core.db import get_engine, migrate
from worker.celery_app import make_celery


def create_app(settings: Settings | None = None) -> FastAPI:
    """An app for ``settings`` (default: from the environment); migrates the DB on start-up."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate(app.state.engine)
        yield

    app = FastAPI(
        title="convlab",
        summary="Train the CIFAR-10 chapter's CNN variants as queued jobs; read their histories.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = get_engine(settings.resolved_database_url)
    app.state.celery = make_celery(settings)
    app.include_router(experiments.router)
    app.include_router(catalogue.router)
    return app
