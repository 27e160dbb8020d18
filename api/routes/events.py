"""Server-sent events (``curl -N``): one per finished epoch and one per status change, ending
when the experiment or study is finished. An epoch event's id is the stream position, so a
client that reconnects with ``Last-Event-ID`` neither loses nor repeats an epoch."""

from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import Engine
from sqlmodel import Session

from api.deps import EngineDep, PrincipalDep, SettingsDep, find_experiment, find_study
from api.errors import documented
from core.config import Settings
from jobs.events import (
    ID_PREFIX,
    experiment_state,
    parse_study_position,
    study_position,
    study_state,
)
from store.tables import Status
from store.tokens import Principal

router = APIRouter(tags=["events"], responses=documented(400, 401, 404))

LastEventId = Annotated[
    str | None, Header(alias="Last-Event-ID", description="Resume after this event.")
]


async def _visible(
    find: Callable[..., object],
    key: str,
    engine: Engine,
    principal: Principal | None,
    settings: Settings,
) -> None:
    """404 before the stream starts, on a short-lived session: a stream must not hold a
    pooled connection for as long as it runs."""

    def check() -> None:
        with Session(engine) as session:
            find(session, key, principal, settings)

    await anyio.to_thread.run_sync(check)


async def _experiment_visible(
    experiment_id: str, engine: EngineDep, principal: PrincipalDep, settings: SettingsDep
) -> None:
    await _visible(find_experiment, experiment_id, engine, principal, settings)


async def _study_visible(
    study_id: str, engine: EngineDep, principal: PrincipalDep, settings: SettingsDep
) -> None:
    await _visible(find_study, study_id, engine, principal, settings)


@router.get(
    "/experiments/{experiment_id}/events",
    response_class=EventSourceResponse,
    dependencies=[Depends(_experiment_visible)],
)
async def experiment_events(
    experiment_id: str,
    engine: EngineDep,
    settings: SettingsDep,
    last_event_id: LastEventId = None,
) -> AsyncIterator[ServerSentEvent]:
    """``epoch`` events (id: the epoch number; data: its metrics) and ``status`` events (data:
    status, epochs done and total, error) until the experiment is finished."""
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    reported: Status | None = None
    while True:
        snapshot = await anyio.to_thread.run_sync(experiment_state, engine, experiment_id, after)
        if snapshot is None:
            yield ServerSentEvent(event="deleted", data={"experiment_id": experiment_id})
            return
        state, epochs = snapshot
        for metrics in epochs:
            yield ServerSentEvent(event="epoch", id=str(metrics.epoch), data=asdict(metrics))
            after = metrics.epoch
        if state.status != reported:
            reported = state.status
            yield ServerSentEvent(event="status", data=asdict(state))
        if state.finished:
            return
        await anyio.sleep(settings.events_poll_seconds)


@router.get(
    "/studies/{study_id}/events",
    response_class=EventSourceResponse,
    dependencies=[Depends(_study_visible)],
)
async def study_events(
    study_id: str,
    engine: EngineDep,
    settings: SettingsDep,
    last_event_id: LastEventId = None,
) -> AsyncIterator[ServerSentEvent]:
    """``epoch`` events (data: experiment_id and the epoch's metrics), ``experiment`` events
    when one of its experiments changes status, and ``status`` events (data: the study's
    status and progress) until the study is finished."""
    seen = parse_study_position(last_event_id)
    reported: Status | None = None
    runs_reported: dict[str, Status] = {}
    while True:
        state = await anyio.to_thread.run_sync(study_state, engine, study_id, seen)
        if state is None:
            yield ServerSentEvent(event="deleted", data={"study_id": study_id})
            return
        for experiment_id, metrics in state.epochs:
            prefix = experiment_id[:ID_PREFIX]
            seen[prefix] = max(seen.get(prefix, 0), metrics.epoch)
            data = {"experiment_id": experiment_id, **asdict(metrics)}
            yield ServerSentEvent(event="epoch", id=study_position(seen), data=data)
        for run in state.runs:
            if runs_reported.get(run.experiment_id) != run.status:
                runs_reported[run.experiment_id] = run.status
                yield ServerSentEvent(event="experiment", data=asdict(run))
        if state.status != reported:
            reported = state.status
            yield ServerSentEvent(
                event="status", data={"status": state.status, "progress": state.progress}
            )
        if state.finished:
            return
        await anyio.sleep(settings.events_poll_seconds)
