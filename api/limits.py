"""Limits and guards that keep one user or one request from taking the server: a body size,
a per-user cap on unfinished experiments, a per-token rate of submissions and no NUL in URLs
(the model budget is in ``models.budget``)."""

import math
import time
from collections import defaultdict, deque

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings
from store.experiments import active_count
from store.handles import Session
from store.tokens import Principal


def check_active_cap(
    session: Session, principal: Principal | None, settings: Settings, adding: int
) -> None:
    """429 when a user's queued and running experiments would pass the cap."""
    if principal is None:
        return
    active = active_count(session, owner=principal.user)
    if active + adding > settings.max_active_per_user:
        raise HTTPException(
            429,
            f"{principal.user} has {active} experiments queued or running; the cap is "
            f"{settings.max_active_per_user}. Wait for some to finish or cancel some.",
            headers={"Retry-After": "60"},
        )


class SubmissionRate:
    """At most ``per_minute`` POSTs per user in any 60 seconds, in this process."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.recent: dict[str, deque[float]] = defaultdict(deque)

    def check(self, principal: Principal | None) -> None:
        if principal is None:
            return
        now = time.monotonic()
        window = self.recent[principal.user]
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= self.per_minute:
            retry = math.ceil(window[0] + 60 - now)
            raise HTTPException(
                429,
                f"More than {self.per_minute} submissions a minute; try again in {retry} s.",
                headers={"Retry-After": str(retry)},
            )
        window.append(now)


class BodySizeLimit:
    """413 for request bodies over ``max_bytes``, declared or streamed."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"The request body is over this server's limit of {self.max_bytes:,} bytes."
        response = JSONResponse({"detail": detail}, status_code=413)
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class NulInUrl:
    """400 for a path or query holding a NUL character: no id, name or filter has one, and
    PostgreSQL refuses to compare text with it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            detail = "The URL holds a NUL character (%00); no id, name or filter can."
            await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)
