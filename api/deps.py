"""Dependencies shared by the routes: the database session and the app's services. The
trivial ones are ``async`` so that they run on the event loop, not in a worker thread."""

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, HTTPException, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from api.auth import principal_of
from api.limits import MinuteRate
from core.config import Settings
from models.status import Priority, Status
from store.db import Engine, Session, open_session
from store.lookups import experiment_by_id, status_and_owner, study_by_id
from store.tables import Experiment, Study
from store.tokens import Principal


async def app_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request, opened and closed on the event loop: a sync dependency's
    teardown would wait for a free worker thread while holding its pooled connection, and
    under load every thread can be waiting for a connection (a pool deadlock)."""
    with open_session(request.app.state.engine) as session:
        yield session


class ReleasingRoute(APIRoute):
    """A route whose sync function runs, closes its session and serializes its answer in one
    worker thread.

    FastAPI would validate a sync route's response in a second worker thread, after the
    function returns, while the session still holds its pooled connection; under load every
    thread can be waiting for a connection then (a pool deadlock broken only by the pool's
    30 s timeout), and the second hop costs time anyway. The functions build their response
    models themselves, so nothing needs the session or another check afterwards."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _in_one_thread(endpoint, kwargs.get("status_code") or 200)
        super().__init__(path, endpoint, **kwargs)


def _in_one_thread(endpoint: Callable[..., Any], status_code: int) -> Callable[..., Any]:
    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            result = endpoint(*args, **kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Session):
                    value.close()
        if not isinstance(result, BaseModel):
            return result
        response = Response(result.model_dump_json(), status_code, media_type="application/json")
        for given in (value for value in kwargs.values() if isinstance(value, Response)):
            for name, value in given.headers.items():  # e.g. Location, set by the function
                if name != "content-length":
                    response.headers[name] = value
        return response

    return run


async def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_celery(request: Request) -> Celery:
    celery: Celery = request.app.state.celery
    return celery


EngineDep = Annotated[Engine, Depends(app_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(app_settings)]
CeleryDep = Annotated[Celery, Depends(get_celery)]


async def current_principal(request: Request) -> Principal | None:
    """Who the request acts for; None while auth is off."""
    return principal_of(request.state)


PrincipalDep = Annotated[Principal | None, Depends(current_principal)]


async def limit_submissions(request: Request) -> None:
    """Count a POST against its user's rate (before the body is validated: bad ones count)."""
    rate: MinuteRate = request.app.state.submissions
    await rate.check(principal_of(request.state))


def visible_owner(principal: Principal | None, settings: Settings) -> str | None:
    """The owner a listing is limited to: the caller's own work when reads are owner-only."""
    if principal is None or principal.admin or not settings.reads_owner_only:
        return None
    return principal.user


AMBIGUOUS = {409: "An id prefix starts several ids (the answer names them); give more of it."}
"""The 409 of a route that takes an id, for ``api.errors.documented``'s ``reasons``."""


def find_experiment(
    session: Session,
    experiment_id: str,
    principal: Principal | None = None,
    settings: Settings | None = None,
) -> Experiment:
    """The experiment named in the path by its id or a unique prefix of it (6 hex characters
    or more; 409 when several start so), or 404 (also when reads are owner-only and it is
    someone else's).

    Called inside the handlers rather than as a dependency: a sync dependency runs in its own
    worker thread, and a request must not hold a pooled connection while it waits for the
    next thread.
    """
    owner = None if settings is None else visible_owner(principal, settings)
    experiment = experiment_by_id(session, experiment_id=experiment_id, owner=owner)
    if experiment is None:
        raise _not_found(experiment_id)
    _visible_or_404(experiment_id, experiment.owner, principal, settings)
    return experiment


def experiment_id_and_status(
    session: Session, experiment_id: str, principal: Principal | None, settings: Settings
) -> tuple[str, Status]:
    """The full id and status of the experiment named in the path by its id or a unique
    prefix, or 404 as ``find_experiment``: for an exact id, one row's two columns read without
    the ORM, for reads that need no more (the history)."""
    status = _exact_status(session, experiment_id, principal, settings)
    if status is not None:
        return experiment_id, status
    experiment = find_experiment(session, experiment_id, principal, settings)
    return experiment.id, experiment.status


def _exact_status(
    session: Session, experiment_id: str, principal: Principal | None, settings: Settings
) -> Status | None:
    """The status of the experiment with exactly this id (404 if it is not visible), or None."""
    row = status_and_owner(session, experiment_id=experiment_id)
    if row is None:
        return None
    status, owner = row
    _visible_or_404(experiment_id, owner, principal, settings)
    return status


def _visible_or_404(
    experiment_id: str, owner: str | None, principal: Principal | None, settings: Settings | None
) -> None:
    """404 (as if it did not exist) when reads are owner-only and ``owner`` is someone else."""
    if settings is not None and visible_owner(principal, settings) not in (None, owner):
        raise _not_found(experiment_id)


def _not_found(experiment_id: str) -> HTTPException:
    return HTTPException(404, f"Experiment {experiment_id} not found.")


def find_study(
    session: Session, study_id: str, principal: Principal | None, settings: Settings
) -> Study:
    """The study named by its id or a unique prefix (409 when several start so), or 404 if
    there is none or the caller may not see it."""
    owner = visible_owner(principal, settings)
    study = study_by_id(session, study_id=study_id, owner=owner)
    if study is None or owner not in (None, study.owner):
        raise HTTPException(404, f"Study {study_id} not found.")
    return study


def check_priority(principal: Principal | None, priority: str) -> None:
    """403 for ``high`` unless auth is off or the caller is an admin."""
    if not _may_submit(principal, priority):
        raise HTTPException(
            403,
            "Only an admin may submit at priority high; submit at normal (the default) or low, "
            "or ask an admin to raise it.",
        )


def derived_priority(
    principal: Principal | None, requested: str | None, source: Priority
) -> Priority:
    """The priority of a run made from another (continued, or rerun with ``from``): the one the
    caller asked for (checked: 403 as ``check_priority``), else ``source``'s, lowered to normal
    where the caller may not submit it: a run made from another never takes more rights than its
    caller has."""
    if requested is not None:
        check_priority(principal, requested)
        return Priority(requested)
    return source if _may_submit(principal, source) else Priority.normal


def _may_submit(principal: Principal | None, priority: str) -> bool:
    return priority != "high" or principal is None or principal.admin


def require_owner(principal: Principal | None, owner: str | None, what: str) -> None:
    """403 unless auth is off, the caller owns the thing, or is an admin."""
    if principal is not None and not principal.may_change(owner):
        raise HTTPException(403, f"Only {owner or 'its owner'} or an admin may {what}.")
