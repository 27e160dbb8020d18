"""The one submit sequence of experiments, continuations and studies, once their request is
checked: count them against the caller's cap, store them, commit, publish, point to the new
row. Publishing comes after the commit; a miss is left to the sweeper."""

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from celery import Celery
from fastapi import Response

from api.limits import check_active_cap
from core.config import Settings
from jobs.queueing import publish
from models.placement import described, fits_any, resources_of
from models.spec import Resources
from store.db import Engine, Session
from store.notifications import ask_to_notify
from store.tables import Experiment, Study
from store.tokens import Principal
from store.workers import accelerators_seen

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


def placement_warnings(session: Session, specs: Iterable[Mapping[str, Any]]) -> list[str]:
    """A sentence for each distinct ``resources`` among ``specs`` that no worker heard from
    in the last day may take: the runs are stored, and wait for such a worker. (A run asking
    for any worker is not warned about: ``workers_up`` says when none is up.)"""
    wanted = {resources_of(spec) for spec in specs} - {Resources()}
    if not wanted:
        return []
    seen = accelerators_seen(session)
    unmet = sorted(
        (resources for resources in wanted if not fits_any(resources, seen)),
        key=lambda resources: resources.model_dump_json(),
    )
    workers = ", ".join(sorted({accelerator.name for accelerator in seen})) or "none"
    return [
        f"no worker seen in the last day can take a run asking for {described(resources)} "
        f"(accelerators seen: {workers}); it stays queued until such a worker starts"
        for resources in unmet
    ]
