"""Limits on the server-sent event streams: how many one user and the whole server may have
open, threads of their own for their reads, the end of a stream whose token is revoked, and of
every stream when the server shuts down (a client reconnects with Last-Event-ID to the next
one; left open, a stream would hold the shutdown up until uvicorn cancels it)."""

import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request

from api.auth import bearer, lookup
from api.deps import EngineDep, PrincipalDep
from api.limits import Counts, Full, Slots, requester
from core.config import Settings
from store.db import Engine

T = TypeVar("T")
POLL_SECONDS = 0.5
"""How often a stream reads the database for new epochs and status changes."""
TOKEN_CHECK_SECONDS = 5.0
"""How often a stream looks its token up again (with auth): a revoked token's streams end
within this and one poll."""
READ_THREADS = 4
"""Threads for the streams' reads, apart from the sync routes' ``api_threads``."""


class EventStreams(Slots):
    """The event streams open, counted in ``counts`` per requester and in all, and the
    threads their reads run in: apart from the sync routes' threads, so that neither can
    starve the other."""

    retry_after_s = 10
    """What a refused client is told to wait: streams end at no predictable time."""
    kind = "streams"

    def __init__(self, settings: Settings, counts: Counts) -> None:
        super().__init__(settings.max_event_streams_per_user, counts, settings.max_event_streams)
        self.reads = anyio.CapacityLimiter(READ_THREADS)
        self.closing = False
        """Set when the server starts shutting down: each stream ends at its next poll."""

    def close_on_exit_signals(self) -> None:
        """End the streams when SIGINT or SIGTERM asks the server to stop, then let the
        server's own handler (uvicorn's) do the rest; only the main thread has signals."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if callable(previous):
                signal.signal(signum, partial(self._closing, previous))

    def _closing(self, previous: Callable[[int, Any], Any], signum: int, frame: Any) -> None:
        self.closing = True
        previous(signum, frame)

    def refusal(self, key: str, full: Full) -> str:
        if full.scope == 0:  # the total's, checked first
            return (
                f"The server has {self.total} event streams open, its cap "
                f"(CONVLAB_MAX_EVENT_STREAMS); try again in a while."
            )
        return (
            f"{key} has {self.per_key} event streams open, the cap for one user "
            f"(CONVLAB_MAX_EVENT_STREAMS_PER_USER); close one first."
        )


class OpenStream:
    """One stream's slot and pace: it reads in the streams' threads, sleeps between polls, and
    re-checks its token (``live``; None while auth is off) at most every ``TOKEN_CHECK_SECONDS``."""

    def __init__(self, streams: EventStreams, live: Callable[[], bool] | None) -> None:
        self.streams = streams
        self.live = live
        self.checked = time.monotonic()

    async def read(self, read: Callable[[], T]) -> T:
        """``read()`` in one of the streams' threads."""
        return await anyio.to_thread.run_sync(read, limiter=self.streams.reads)

    async def next_poll(self) -> bool:
        """Sleep until the next poll; False once the stream's token is unknown or revoked."""
        await anyio.sleep(POLL_SECONDS)
        if self.live is None or time.monotonic() - self.checked < TOKEN_CHECK_SECONDS:
            return True
        self.checked = time.monotonic()
        return await self.read(self.live)

    @property
    def server_closing(self) -> bool:
        """Whether the server is shutting down (the stream should end now)."""
        return self.streams.closing


def _token_check(request: Request, engine: Engine) -> Callable[[], bool]:
    """Whether the token the request presented (auth let it through) is still live."""
    presented = bearer(request.scope)
    assert presented is not None
    return lambda: lookup(engine, presented) is not None


async def open_stream(
    request: Request, principal: PrincipalDep, engine: EngineDep
) -> AsyncIterator[OpenStream]:
    """A slot for the request's stream, held until the response ends for any reason."""
    streams: EventStreams = request.app.state.streams
    live = None if principal is None else _token_check(request, engine)
    async with streams.slot(requester(principal, request)):
        yield OpenStream(streams, live)


OpenStreamDep = Annotated[OpenStream, Depends(open_stream)]
