"""Dependencies shared by the routes: the database session and the app's services."""

from collections.abc import AsyncIterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Request
from sqlalchemy import Engine
from sqlmodel import Session

from core.config import Settings
from core.tables import Experiment


def app_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request, opened and closed on the event loop: a sync dependency's
    teardown would wait for a free worker thread while holding its pooled connection, and
    under load every thread can be waiting for a connection (a pool deadlock)."""
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_celery(request: Request) -> Celery:
    celery: Celery = request.app.state.celery
    return celery


EngineDep = Annotated[Engine, Depends(app_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(app_settings)]
CeleryDep = Annotated[Celery, Depends(get_celery)]


def find_experiment(session: Session, experiment_id: str) -> Experiment:
    """The experiment named in the path, or 404.

    Called inside the handlers rather than as a dependency: a sync dependency runs in its own
    worker thread, and a request must not hold a pooled connection while it waits for the
    next thread.
    """
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        raise HTTPException(404, f"Experiment {experiment_id} not found.")
    return experiment
