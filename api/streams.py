"""Limits on the server-sent event streams: how many one user and the whole server may have
open, threads of their own for their reads, and the end of a stream whose token is revoked."""

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, HTTPException, Request

from api.deps import EngineDep, PrincipalDep, SettingsDep
from core.config import Settings
from store.handles import Engine, Session
from store.tokens import authenticate

T = TypeVar("T")

RETRY_AFTER_S = 10
"""What a refused client is told to wait: streams end at no predictable time."""


class EventStreams:
    """The event streams open in this process, counted per key (a user, or a client address
    while auth is off) and in all, and the threads their reads run in: apart from the sync
    routes' threads, so that neither can starve the other."""

    def __init__(self, settings: Settings) -> None:
        self.per_key = settings.max_event_streams_per_user
        self.total = settings.max_event_streams
        self.open: Counter[str] = Counter()
        self.reads = anyio.CapacityLimiter(settings.events_threads)

    @contextmanager
    def slot(self, key: str) -> Iterator[None]:
        """Hold one of ``key``'s slots for the block, or 429 when a cap is reached."""
        self._check(key)
        self.open[key] += 1
        try:
            yield
        finally:
            self.open[key] -= 1
            if not self.open[key]:
                del self.open[key]

    def _check(self, key: str) -> None:
        if self.open.total() >= self.total:
            raise _refused(
                f"The server has {self.total} event streams open, its cap "
                f"(CONVLAB_MAX_EVENT_STREAMS); try again in a while."
            )
        if self.open[key] >= self.per_key:
            raise _refused(
                f"{key} has {self.per_key} event streams open, the cap for one user "
                f"(CONVLAB_MAX_EVENT_STREAMS_PER_USER); close one first."
            )


def _refused(detail: str) -> HTTPException:
    return HTTPException(429, detail, headers={"Retry-After": str(RETRY_AFTER_S)})


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
    presented = request.headers["authorization"].partition(" ")[2].strip()

    def live() -> bool:
        with Session(engine) as session:
            return authenticate(session, presented) is not None

    return live


async def open_stream(
    request: Request, principal: PrincipalDep, engine: EngineDep, settings: SettingsDep
) -> AsyncIterator[OpenStream]:
    """A slot for the request's stream, held until the response ends for any reason."""
    streams: EventStreams = request.app.state.streams
    if principal is None:
        key, live = f"The client at {request.client.host if request.client else '?'}", None
    else:
        key, live = principal.user, _token_check(request, engine)
    with streams.slot(key):
        yield OpenStream(
            streams.reads, settings.events_poll_seconds, live, settings.events_token_check_seconds
        )


OpenStreamDep = Annotated[OpenStream, Depends(open_stream)]
