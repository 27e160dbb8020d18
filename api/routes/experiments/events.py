"""An experiment's event stream: server-sent events (``api.event_streams``)."""

from collections.abc import AsyncIterator
from dataclasses import asdict

from fastapi import APIRouter
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.deps import AMBIGUOUS, EngineDep
from api.errors import documented
from api.event_streams import EVENT_RESPONSES, LastEventId, Poll, VisibleExperimentId, stream_polls
from api.streams import OpenStreamDep
from jobs.events import experiment_state, parse_position

router = APIRouter(tags=["events"], responses=EVENT_RESPONSES)


@router.get(
    "/experiments/{experiment_id}/events",
    response_class=EventSourceResponse,
    responses=documented(409, reasons=AMBIGUOUS),
)
async def experiment_events(
    experiment_id: VisibleExperimentId,
    stream: OpenStreamDep,
    engine: EngineDep,
    last_event_id: LastEventId = None,
) -> AsyncIterator[ServerSentEvent]:
    """``epoch`` events (id: the epoch number; data: its metrics) and ``status`` events (data:
    status, epochs done and total, error) until the experiment is finished. A Last-Event-ID
    that is not an epoch number (ASCII digits, below 2**31) is ignored: all epochs come."""
    after = parse_position(last_event_id)

    def read() -> Poll | None:
        nonlocal after
        snapshot = experiment_state(engine, experiment_id, after)
        if snapshot is None:
            return None
        state, epochs = snapshot
        if epochs:
            after = epochs[-1].epoch
        return Poll(
            [ServerSentEvent(event="epoch", id=str(e.epoch), data=asdict(e)) for e in epochs],
            [("", state.status, ServerSentEvent(event="status", data=asdict(state)))],
            state.finished,
        )

    async for event in stream_polls(stream, read, {"experiment_id": experiment_id}):
        yield event
