"""A study's event stream: server-sent events (``api.event_streams``)."""

from collections.abc import AsyncIterator
from dataclasses import asdict

from fastapi import APIRouter
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.deps import AMBIGUOUS, EngineDep
from api.errors import documented
from api.event_streams import EVENT_RESPONSES, LastEventId, Poll, VisibleStudyId, stream_polls
from api.streams import OpenStreamDep
from jobs.events import parse_position, study_state

router = APIRouter(tags=["events"], responses=EVENT_RESPONSES)


@router.get(
    "/studies/{study_id}/events",
    response_class=EventSourceResponse,
    responses=documented(409, reasons=AMBIGUOUS),
)
async def study_events(
    study_id: VisibleStudyId,
    stream: OpenStreamDep,
    engine: EngineDep,
    last_event_id: LastEventId = None,
) -> AsyncIterator[ServerSentEvent]:
    """``epoch`` events (data: experiment_id and the epoch's metrics), ``experiment`` events
    when one of its experiments changes status, and ``status`` events (data: the study's
    status and progress) until the study is finished. An epoch event's id is its row's number
    among the study's epoch rows, which follow their commit order; a Last-Event-ID that is not
    such a number is ignored: all epochs come."""
    after = parse_position(last_event_id)

    def read() -> Poll | None:
        nonlocal after
        state = study_state(engine, study_id, after)
        if state is None:
            return None
        epochs = []
        for row in state.epochs:
            after = row.study_seq
            data = {"experiment_id": row.experiment_id, **asdict(row.metrics)}
            epochs.append(ServerSentEvent(event="epoch", id=str(after), data=data))
        statuses = [
            (run.experiment_id, run.status, ServerSentEvent(event="experiment", data=asdict(run)))
            for run in state.runs
        ]
        status = {"status": state.status, "progress": state.progress}
        statuses.append(("", state.status, ServerSentEvent(event="status", data=status)))
        return Poll(epochs, statuses, state.finished)

    async for event in stream_polls(stream, read, {"study_id": study_id}):
        yield event
