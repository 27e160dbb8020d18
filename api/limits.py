"""Limits and guards that keep one user or one request from taking the server: a body size,
a per-user cap on unfinished experiments, per-user rates of submissions and of reads, a
per-user cap on running predictions, no NUL in URLs and no Host header but this server's names
(the model budget is in ``models.budget``, the picture size in ``views.images``)."""

import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException, Request
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings
from store.experiments import lock_and_count_active
from store.handles import Session
from store.tokens import Principal


def check_active_cap(
    session: Session, principal: Principal | None, settings: Settings, adding: int
) -> None:
    """429 when a user's queued and running experiments would pass the cap. Call it first in
    the transaction that stores the experiments: the user's submissions wait for each other
    from here until it commits (``lock_and_count_active``), so two at once cannot both pass."""
    if principal is None:
        return
    active = lock_and_count_active(session, owner=principal.user)
    if active + adding > settings.max_active_per_user:
        raise HTTPException(
            429,
            f"{principal.user} has {active} experiments queued, running or paused; the cap is "
            f"{settings.max_active_per_user}. Wait for some to finish or cancel some.",
            headers={"Retry-After": "60"},
        )


class MinuteRate:
    """At most ``per_minute`` requests of a kind (``what``) per user in any 60 seconds, in this
    process. Not counted while auth is off: no user then, and one client address would lump
    the dashboard and every script of a one-user box together."""

    def __init__(self, per_minute: int, what: str) -> None:
        self.per_minute = per_minute
        self.what = what
        self.recent: dict[str, deque[float]] = defaultdict(deque)

    def check(self, principal: Principal | None) -> None:
        """Count one request for ``principal``'s user; 429 with Retry-After when over."""
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
                f"More than {self.per_minute:,} {self.what} a minute; try again in {retry} s.",
                headers={"Retry-After": str(retry)},
            )
        window.append(now)


class ReadRate:
    """429 for a GET or HEAD over its user's ``MinuteRate``. Inside ``BearerAuth``, which sets
    the principal; /health and the dashboard's files have none, so they are never counted."""

    def __init__(self, app: ASGIApp, *, rate: MinuteRate) -> None:
        self.app = app
        self.rate = rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            try:
                self.rate.check(scope.get("state", {}).get("principal"))
            except HTTPException as exc:
                answer = JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def requester(principal: Principal | None, request: Request) -> str:
    """Whose slots a request takes: the token's user, or with auth off the client."""
    if principal is not None:
        return principal.user
    return f"The client at {request.client.host if request.client else '?'}"


class Slots:
    """Things held at once, counted per key (a ``requester``), in this process. Slots are
    taken and given back on the event loop only, so a plain counter needs no lock."""

    retry_after_s = 1

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self.held: Counter[str] = Counter()

    def refusal(self, key: str) -> str | None:
        """Why ``key`` may not take a slot now (None: it may)."""
        raise NotImplementedError

    @contextmanager
    def slot(self, key: str) -> Iterator[None]:
        """Hold one of ``key``'s slots for the block; a 429 saying ``refusal`` when refused."""
        refused = self.refusal(key)
        if refused is not None:
            raise HTTPException(429, refused, headers={"Retry-After": str(self.retry_after_s)})
        self.held[key] += 1
        try:
            yield
        finally:
            self.held[key] -= 1
            if not self.held[key]:
                del self.held[key]


class PredictionSlots(Slots):
    """At most ``per_key`` predictions per user running at once."""

    def refusal(self, key: str) -> str | None:
        if self.held[key] < self.per_key:
            return None
        return (
            f"{key} already has {self.held[key]} predictions running, the cap "
            "(CONVLAB_MAX_PREDICTIONS_PER_USER); send the next when one has answered."
        )


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


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


class HostCheck:
    """400 for a request whose ``Host`` header names neither a loopback name, nor the address
    the request came in on, nor one of ``allowed``: a web page whose own name was pointed at
    this server (DNS rebinding) cannot use it from a visitor's browser then."""

    def __init__(self, app: ASGIApp, *, allowed: list[str]) -> None:
        self.app = app
        self.allowed = LOOPBACK_HOSTS | {host.lower() for host in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._served(scope):
            detail = (
                "The Host header names a host this server does not answer to; call it by "
                "localhost or its address, or add the name to CONVLAB_ALLOWED_HOSTS."
            )
            await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _served(self, scope: Scope) -> bool:
        host = _without_port(Headers(scope=scope).get("host", ""))
        return host in self.allowed or host == _address(scope)


def _without_port(host: str) -> str:
    """A Host header's name or address, lower case: ``[::1]:8000`` gives ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]


def _address(scope: Scope) -> str | None:
    """The address the request came in on, as a Host header writes it (IPv6 in brackets)."""
    server = scope.get("server")
    if not server:
        return None
    address = str(server[0]).lower()
    return f"[{address}]" if ":" in address else address
