"""The one submit sequence of experiments, continuations and studies, once their request is
checked: count them against the caller's cap, store them, commit, publish, point to the new
row. Publishing comes after the commit; a miss is left to the sweeper."""

from collections.abc import Callable
from typing import TypeVar

from celery import Celery
from fastapi import Response

from api.limits import check_active_cap
from core.config import Settings
from jobs.queueing import publish
from store.db import Engine, Session
from store.notifications import ask_to_notify
from store.tables import Experiment, Study
from store.tokens import Principal

Stored = TypeVar("Stored", Experiment, Study)


def store_and_publish(
    session: Session,
    engine: Engine,
    celery: Celery,
    principal: Principal | None,
    settings: Settings,
    response: Response,
    *,
    adding: int,
    store: Callable[[], tuple[Stored, list[Experiment]]],
    notify: str | None = None,
) -> Stored:
    """Check the cap for ``adding`` more active experiments, ``store`` the row (and the
    experiments to queue), record ``notify``, commit, publish them and set Location."""
    check_active_cap(session, principal, settings, adding=adding)
    row, queued = store()
    ask_to_notify(row, notify)
    session.commit()
    for experiment in queued:
        publish(engine, celery, experiment.id)
    kind = "studies" if isinstance(row, Study) else "experiments"
    response.headers["Location"] = f"/{kind}/{row.id}"
    return row
