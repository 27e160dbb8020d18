"""Limits on the server-sent event streams: how many one user and the whole server may have
open, threads of their own for their reads, and the end of a stream whose token is revoked."""

import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Request

from api.auth import bearer, lookup
from api.deps import EngineDep, PrincipalDep, SettingsDep
from api.limits import Slots, requester
from core.config import Settings
from store.handles import Engine

T = TypeVar("T")


class EventStreams(Slots):
    """The event streams open in this process, counted per requester and in all, and the
    threads their reads run in: apart from the sync routes' threads, so that neither can
    starve the other."""

    retry_after_s = 10
    """What a refused client is told to wait: streams end at no predictable time."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.max_event_streams_per_user)
        self.total = settings.max_event_streams
        self.reads = anyio.CapacityLimiter(settings.events_threads)

    def refusal(self, key: str) -> str | None:
        if self.held.total() >= self.total:
            return (
                f"The server has {self.total} event streams open, its cap "
                f"(CONVLAB_MAX_EVENT_STREAMS); try again in a while."
            )
        if self.held[key] >= self.per_key:
            return (
                f"{key} has {self.per_key} event streams open, the cap for one user "
                f"(CONVLAB_MAX_EVENT_STREAMS_PER_USER); close one first."
            )
        return None


class OpenStream:
    """One stream's slot and pace: it reads in the streams' threads, sleeps between polls, and
    re-checks its token (``live``; None while auth is off) at most every ``check_seconds``."""

    def __init__(
        self,
        reads: anyio.CapacityLimiter,
        poll_seconds: float,
        live: Callable[[], bool] | None,
        check_seconds: float,
    ) -> None:
        self.reads = reads
        self.poll_seconds = poll_seconds
        self.live = live
        self.check_seconds = check_seconds
        self.checked = time.monotonic()

    async def read(self, read: Callable[[], T]) -> T:
        """``read()`` in one of the streams' threads."""
        return await anyio.to_thread.run_sync(read, limiter=self.reads)

    async def next_poll(self) -> bool:
        """Sleep until the next poll; False once the stream's token is unknown or revoked."""
        await anyio.sleep(self.poll_seconds)
        if self.live is None or time.monotonic() - self.checked < self.check_seconds:
            return True
        self.checked = time.monotonic()
        return await self.read(self.live)


def _token_check(request: Request, engine: Engine) -> Callable[[], bool]:
    """Whether the token the request presented (auth let it through) is still live."""
    presented = bearer(request.scope)
    assert presented is not None
    return lambda: lookup(engine, presented) is not None


async def open_stream(
    request: Request, principal: PrincipalDep, engine: EngineDep, settings: SettingsDep
) -> AsyncIterator[OpenStream]:
    """A slot for the request's stream, held until the response ends for any reason."""
    streams: EventStreams = request.app.state.streams
    live = None if principal is None else _token_check(request, engine)
    with streams.slot(requester(principal, request)):
        yield OpenStream(
            streams.reads, settings.events_poll_seconds, live, settings.events_token_check_seconds
        )


OpenStreamDep = Annotated[OpenStream, Depends(open_stream)]
