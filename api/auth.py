"""Bearer-token authentication for every path but /health, when ``CONVLAB_AUTH`` is on."""

from typing import Any

import anyio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from store.handles import Engine, Session
from store.tokens import Principal, authenticate

OPEN_PATHS = frozenset({"/health", "/"})
"""Served without a token: liveness, and the dashboard's page (which holds no data)."""
OPEN_PREFIX = "/ui/"
"""The dashboard's script and style."""


class BearerAuth:
    """Puts the request's ``Principal`` in ``request.state.principal`` (None while auth is
    off) or answers 401 with a ``WWW-Authenticate`` challenge.

    Tokens are looked up in ``threads`` threads of their own, not the sync routes' threads: a
    token check never waits behind slow routes. Each request looks its token up (one row by
    primary key), so a revoked token stops working at once."""

    def __init__(self, app: ASGIApp, *, engine: Engine, enabled: bool, threads: int) -> None:
        self.app = app
        self.engine = engine
        self.enabled = enabled
        self.lookups = anyio.CapacityLimiter(threads)

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
        principal = (
            await anyio.to_thread.run_sync(lookup, self.engine, presented, limiter=self.lookups)
            if presented
            else None
        )
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


def lookup(engine: Engine, presented: str) -> Principal | None:
    """The live token's principal (None: unknown or revoked), read in a short session."""
    with Session(engine) as session:
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
