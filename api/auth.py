"""Bearer-token authentication for every path but /health, when ``CONVLAB_AUTH`` is on."""

import hashlib
from typing import Any

import anyio
from cachetools import TTLCache
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from store.db import Engine, session_scope
from store.tokens import Principal, authenticate

OPEN_PATHS = frozenset({"/health", "/"})
"""Served without a token: liveness, and the dashboard's page (which holds no data)."""
OPEN_PREFIX = "/ui/"
"""The dashboard's script and style."""


class BearerAuth:
    """Puts the request's ``Principal`` in ``request.state.principal`` (None while auth is
    off) or answers 401 with a ``WWW-Authenticate`` challenge.

    Tokens are looked up in ``threads`` threads of their own, not the sync routes' threads: a
    token check never waits behind slow routes. A token found live is trusted for
    ``trust_seconds`` before it is looked up again, so a revoked token stops working within
    that time. A lookup costs 0.7 ms of CPU, twice a history read's own status lookup: looking
    every request's token up, the API answered less than half as many reads at 64 connections
    as without auth (BENCHMARKS.md, section 7)."""

    def __init__(
        self, app: ASGIApp, *, engine: Engine, enabled: bool, threads: int, trust_seconds: float
    ) -> None:
        self.app = app
        self.engine = engine
        self.enabled = enabled
        self.lookups = anyio.CapacityLimiter(threads)
        self.trusted: TTLCache[bytes, Principal] | None = (
            TTLCache(maxsize=4096, ttl=trust_seconds) if trust_seconds > 0 else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not self.enabled
            or path in OPEN_PATHS
            or path.startswith(OPEN_PREFIX)
        ):
            scope.setdefault("state", {})["principal"] = None
            await self.app(scope, receive, send)
            return
        presented = bearer(scope)
        principal = await self._principal(presented) if presented else None
        if principal is None:
            detail = (
                "This server needs a token: send 'Authorization: Bearer <token>' "
                "(an admin creates one with 'convlab token create --user NAME')."
                if presented is None
                else "The token is unknown or revoked."
            )
            response = JSONResponse(
                {"detail": detail},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="convlab"'},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _principal(self, presented: str) -> Principal | None:
        """The token's principal: trusted from a recent lookup, else looked up (and trusted
        for a while if live). Keyed by the token's digest: no secret is kept in memory."""
        if self.trusted is None:
            return await self._lookup(presented)
        key = hashlib.sha256(presented.encode()).digest()
        principal = self.trusted.get(key)
        if principal is None:
            principal = await self._lookup(presented)
            if principal is not None:
                self.trusted[key] = principal
        return principal

    async def _lookup(self, presented: str) -> Principal | None:
        return await anyio.to_thread.run_sync(lookup, self.engine, presented, limiter=self.lookups)


def lookup(engine: Engine, presented: str) -> Principal | None:
    """The live token's principal (None: unknown or revoked), read in a short session."""
    with session_scope(engine) as session:
        return authenticate(session, presented)


def bearer(scope: Scope) -> str | None:
    """The token an ``Authorization: Bearer`` header presents, if any."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def principal_of(state: Any) -> Principal | None:
    principal: Principal | None = getattr(state, "principal", None)
    return principal
