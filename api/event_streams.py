"""Server-sent events (``curl -N``): one per finished epoch and one per status change, ending
when the experiment or study is finished. An epoch event's id is the stream position, so a
client that reconnects with ``Last-Event-ID`` neither loses nor repeats an epoch; one this
server cannot have written (not ASCII digits, 2**31 or more, ...) is ignored: the stream starts
from the beginning.

Each user (with auth off: each client address) may have so many streams open, and the server
so many in all (429 before the stream starts); a stream whose token is revoked ends with a
``revoked`` event within a few seconds (``api.streams.TOKEN_CHECK_SECONDS``)."""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header
from fastapi.sse import ServerSentEvent

from api.deps import (
    EngineDep,
    PrincipalDep,
    SettingsDep,
    find_experiment,
    find_study,
)
from api.errors import documented
from api.streams import OpenStream, OpenStreamDep
from core.config import Settings
from models.status import Status
from store.db import Engine, session_scope
from store.tables import Experiment, Study
from store.tokens import Principal

REVOKED = "This stream's token is unknown or revoked now; the stream ends."
_REFUSED = {"description": "Too many event streams open: the user's or the server's cap."}
EVENT_RESPONSES = documented(400, 401, 404) | {429: documented(429)[429] | _REFUSED}
"""Every event stream's error answers."""

LastEventId = Annotated[
    str | None, Header(alias="Last-Event-ID", description="Resume after this event.")
]


@dataclass(frozen=True)
class Poll:
    """One read of a stream: the epoch events to send, in order, then what may have changed
    status (a key, its status now, the event that says so); the stream ends after them once
    ``finished``."""

    epochs: list[ServerSentEvent]
    statuses: list[tuple[str, Status, ServerSentEvent]]
    finished: bool


async def stream_polls(
    stream: OpenStream, read: Callable[[], Poll | None], gone: dict[str, str]
) -> AsyncIterator[ServerSentEvent]:
    """The loop of every stream: ``read`` (in a streams' thread; it keeps the stream's
    position) at ``stream``'s pace, sending its epochs and each status that changed, until
    finished; a ``deleted`` event (data: ``gone``) once ``read`` finds nothing, a ``revoked``
    event once the stream's token is unknown or revoked; it ends at once when the server shuts
    down."""
    reported: dict[str, Status] = {}
    while True:
        poll = await stream.read(read)
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
        if not await stream.next_poll():
            yield ServerSentEvent(event="revoked", data={"detail": REVOKED})
            return
        if stream.server_closing:  # the client reconnects, with Last-Event-ID, to the next one
            return


async def _visible(
    find: Callable[..., Experiment | Study],
    key: str,
    stream: OpenStream,
    engine: Engine,
    principal: Principal | None,
    settings: Settings,
) -> str:
    """The full id the path names (by id or unique prefix), or 404 (409 for an ambiguous
    prefix) before the stream starts (once it has a slot: the cheaper refusal comes first), on
    a short-lived session: a stream must not hold a pooled connection for as long as it runs."""

    def check() -> str:
        with session_scope(engine) as session:
            return find(session, key, principal, settings).id

    return await stream.read(check)


async def _experiment_visible(
    experiment_id: str,
    stream: OpenStreamDep,
    engine: EngineDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> str:
    return await _visible(find_experiment, experiment_id, stream, engine, principal, settings)


async def _study_visible(
    study_id: str,
    stream: OpenStreamDep,
    engine: EngineDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> str:
    return await _visible(find_study, study_id, stream, engine, principal, settings)


VisibleExperimentId = Annotated[str, Depends(_experiment_visible)]
"""The full id of the experiment the path names, once the caller may see it."""
VisibleStudyId = Annotated[str, Depends(_study_visible)]
"""The full id of the study the path names, once the caller may see it."""
