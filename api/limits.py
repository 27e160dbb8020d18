"""Limits and guards that keep one user or one request from taking the server: a body size,
a per-user cap on unfinished experiments, per-user rates of submissions and of reads, a
per-user cap on running predictions, no NUL in URLs and no Host header but this server's names
(the model budget is in ``models.budget``, the picture size in ``views.images``)."""

import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import anyio
from fastapi import HTTPException, Request
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings
from models.datasets import uploaded_by
from store.db import Session
from store.experiments import lock_and_count_active
from store.storage import stored_bytes_of
from store.tokens import Principal


def check_active_cap(
    session: Session, principal: Principal | None, settings: Settings, adding: int
) -> None:
    """403 when the user's stored weights have reached the storage quota; 429 when their
    queued and running experiments would pass the cap. Call it first in the transaction that
    stores the experiments: the user's submissions wait for each other from here until it
    commits (``lock_and_count_active``), so two at once cannot both pass."""
    check_quota(session, principal, settings)
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


def check_quota(
    session: Session, principal: Principal | None, settings: Settings, adding: int = 0
) -> None:
    """403 when what the user stores, their runs' weights and their uploads, has reached
    ``storage_quota_mb``, or would pass it by ``adding`` bytes more (while auth is off,
    everyone's count as one user's)."""
    if settings.storage_quota_mb is None:
        return
    user = principal.user if principal else None
    weights = stored_bytes_of(session, user)
    uploads = sum(info.size_bytes or 0 for info in uploaded_by(settings.resolved_data_dir, user))
    held, quota = weights + uploads, settings.storage_quota_mb * 2**20
    if held >= quota or held + adding > quota:
        what = f"{user or 'This server'}'s runs hold {weights / 2**20:.1f} MB of weights"
        if uploads:
            what += f" and their dataset uploads {uploads / 2**20:.1f} MB"
        wanted = f"; this upload would add {adding / 2**20:.1f} MB" if adding else ""
        raise HTTPException(
            403,
            f"{what}{wanted}; the storage quota is {settings.storage_quota_mb:g} MB. Delete runs "
            "(convlab delete ID) or uploads (convlab datasets delete NAME) you no longer need, "
            "or ask an admin for more.",
        )


MAX_UPLOADS_PER_USER = 10
"""Dataset uploads one user keeps (while auth is off, everyone's count as one user's): with
the body limit, what one token can put on the data disk when no storage quota is set."""


def check_upload_cap(principal: Principal | None, settings: Settings) -> None:
    """403 when the user keeps MAX_UPLOADS_PER_USER dataset uploads already."""
    user = principal.user if principal else None
    kept = uploaded_by(settings.resolved_data_dir, user)
    if len(kept) >= MAX_UPLOADS_PER_USER:
        names = ", ".join(info.name for info in kept[:5]) + (", ..." if len(kept) > 5 else "")
        raise HTTPException(
            403,
            f"{user or 'This server'} keeps {len(kept)} dataset uploads ({names}); the cap is "
            f"{MAX_UPLOADS_PER_USER}. Delete one you no longer need (convlab datasets delete "
            "NAME) to upload another.",
        )


class Full(Exception):
    """A slot refused: the ``scope``-th of the scopes asked for holds ``held``, its cap."""

    def __init__(self, scope: int, held: int) -> None:
        super().__init__(scope, held)
        self.scope = scope
        self.held = held


Release = Callable[[], Awaitable[None]]
"""Gives a slot back."""


class Counts(Protocol):
    """Where the per-user limits are counted: this process's memory (``LocalCounts``), or a
    Redis every API process shares (``api.shared_counts.SharedCounts``)."""

    async def count_request(self, name: str, per_minute: int) -> int:
        """Count one request under ``name`` if it has had fewer than ``per_minute`` in the
        last 60 seconds (0); else, counting nothing, the seconds until one is allowed."""
        ...

    async def take(self, scopes: Sequence[tuple[str, int]]) -> Release:
        """Hold one slot in each of ``scopes`` (a name and its cap), if every one has room;
        else ``Full`` for the first that has none."""
        ...

    async def close(self) -> None:
        """Let go of connections (at the app's shutdown)."""
        ...


class LocalCounts:
    """``Counts`` in this process's memory: the embedded default's (one API process), and a
    shared count's stand-in while its Redis does not answer. Used on the event loop only, so
    plain containers need no lock."""

    def __init__(self) -> None:
        self.recent: dict[str, deque[float]] = defaultdict(deque)
        self.held: Counter[str] = Counter()

    async def count_request(self, name: str, per_minute: int) -> int:
        now = time.monotonic()
        window = self.recent[name]
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= per_minute:
            return math.ceil(window[0] + 60 - now)
        window.append(now)
        return 0

    async def take(self, scopes: Sequence[tuple[str, int]]) -> Release:
        for index, (name, cap) in enumerate(scopes):
            if self.held[name] >= cap:
                raise Full(index, self.held[name])
        names = [name for name, _ in scopes]
        self.held.update(names)

        async def release() -> None:
            self.held.subtract(names)
            for name in names:
                if not self.held[name]:
                    del self.held[name]

        return release

    async def close(self) -> None:
        pass


class MinuteRate:
    """At most ``per_minute`` requests of a kind (``what``) per user in any 60 seconds, in
    ``counts``. Not counted while auth is off: no user then, and one client address would lump
    the dashboard and every script of a one-user box together."""

    def __init__(self, per_minute: int, what: str, counts: Counts) -> None:
        self.per_minute = per_minute
        self.what = what
        self.counts = counts

    async def check(self, principal: Principal | None) -> None:
        """Count one request for ``principal``'s user; 429 with Retry-After when over."""
        if principal is None:
            return
        retry = await self.counts.count_request(f"{self.what}:{principal.user}", self.per_minute)
        if retry:
            raise HTTPException(
                429,
                f"More than {self.per_minute:,} {self.what} a minute; try again in {retry} s.",
                headers={"Retry-After": str(retry)},
            )


class ReadRate:
    """429 for a GET or HEAD over its user's ``MinuteRate``. Inside ``BearerAuth``, which sets
    the principal; /health and the dashboard's files have none, so they are never counted."""

    def __init__(self, app: ASGIApp, *, rate: MinuteRate) -> None:
        self.app = app
        self.rate = rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            try:
                await self.rate.check(scope.get("state", {}).get("principal"))
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
    """Things held at once, counted in ``counts`` per key (a ``requester``) and, with a
    ``total``, in all."""

    retry_after_s = 1
    kind = "slots"
    """What is held, naming its counts."""

    def __init__(self, per_key: int, counts: Counts, total: int | None = None) -> None:
        self.per_key = per_key
        self.counts = counts
        self.total = total

    def scopes(self, key: str) -> list[tuple[str, int]]:
        """The counts a slot of ``key``'s takes, with their caps: the total's first."""
        own = [(f"{self.kind}:of:{key}", self.per_key)]
        return own if self.total is None else [(f"{self.kind}:all", self.total), *own]

    def refusal(self, key: str, full: Full) -> str:
        """Why ``key`` may not take a slot now."""
        raise NotImplementedError

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Hold one of ``key``'s slots for the block; a 429 saying ``refusal`` when refused.
        The slot is given back even when the block is cancelled (a client gone)."""
        try:
            release = await self.counts.take(self.scopes(key))
        except Full as full:
            headers = {"Retry-After": str(self.retry_after_s)}
            raise HTTPException(429, self.refusal(key, full), headers=headers) from None
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await release()


class PredictionSlots(Slots):
    """At most ``per_key`` predictions per user running at once."""

    kind = "predictions"

    def refusal(self, key: str, full: Full) -> str:
        return (
            f"{key} already has {full.held} predictions running, the cap "
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
