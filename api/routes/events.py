"""Server-sent events (``curl -N``): one per finished epoch and one per status change, ending
when the experiment or study is finished. An epoch event's id is the stream position, so a
client that reconnects with ``Last-Event-ID`` neither loses nor repeats an epoch."""

from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent

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
from store.handles import Engine, Session
from store.tables import Status
from store.tokens import Principal

router = APIRouter(tags=["events"], responses=documented(400, 401, 404))

LastEventId = Annotated[
    str | None, Header(alias="Last-Event-ID", description="Resume after this event.")
]


@dataclass(frozen=True)
class _Poll:
    """One read of a stream: the epoch events to send, in order, then what may have changed
    status (a key, its status now, the event that says so); the stream ends after them once
    ``finished``."""

    epochs: list[ServerSentEvent]
    statuses: list[tuple[str, Status, ServerSentEvent]]
    finished: bool


async def _stream(
    read: Callable[[], _Poll | None], gone: dict[str, str], poll_seconds: float
) -> AsyncIterator[ServerSentEvent]:
    """The loop of every stream: ``read`` (in a worker thread; it keeps the stream's position)
    every ``poll_seconds``, sending its epochs and each status that changed, until finished;
    a ``deleted`` event (data: ``gone``) once ``read`` finds nothing."""
    reported: dict[str, Status] = {}
    while True:
        poll = await anyio.to_thread.run_sync(read)
        if poll is None:
            yield ServerSentEvent(event="deleted", data=gone)
            return
        for event in poll.epochs:
            yield event
        for key, status, event in poll.statuses:
            if reported.get(key) != status:
                reported[key] = status
                yield event
        if poll.finished:
            return
        await anyio.sleep(poll_seconds)


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

    def read() -> _Poll | None:
        nonlocal after
        snapshot = experiment_state(engine, experiment_id, after)
        if snapshot is None:
            return None
        state, epochs = snapshot
        if epochs:
            after = epochs[-1].epoch
        return _Poll(
            [ServerSentEvent(event="epoch", id=str(e.epoch), data=asdict(e)) for e in epochs],
            [("", state.status, ServerSentEvent(event="status", data=asdict(state)))],
            state.finished,
        )

    async for event in _stream(
        read, {"experiment_id": experiment_id}, settings.events_poll_seconds
    ):
        yield event


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

    def read() -> _Poll | None:
        state = study_state(engine, study_id, seen)
        if state is None:
            return None
        epochs = []
        for experiment_id, metrics in state.epochs:
            prefix = experiment_id[:ID_PREFIX]
            seen[prefix] = max(seen.get(prefix, 0), metrics.epoch)
            data = {"experiment_id": experiment_id, **asdict(metrics)}
            epochs.append(ServerSentEvent(event="epoch", id=study_position(seen), data=data))
        statuses = [
            (run.experiment_id, run.status, ServerSentEvent(event="experiment", data=asdict(run)))
            for run in state.runs
        ]
        status = {"status": state.status, "progress": state.progress}
        statuses.append(("", state.status, ServerSentEvent(event="status", data=status)))
        return _Poll(epochs, statuses, state.finished)

    async for event in _stream(read, {"study_id": study_id}, settings.events_poll_seconds):
        yield event
