"""The error responses the OpenAPI schema documents; each body is ``{"detail": sentence}``."""

import math
from collections.abc import Mapping
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match, Mount
from starlette.types import Scope

from models.errors import SpecError, error_entry
from store.outages import is_transient


class Problem(BaseModel):
    """What went wrong, in a sentence a person can act on."""

    detail: str


_REASONS = {
    400: "The URL holds a NUL character, or the Host header names none of this server's names.",
    401: "No token, or an unknown or revoked one (only when auth is on).",
    403: "Only the owner or an admin may do this.",
    404: "No such experiment or study (with owner-only reads, also someone else's).",
    409: "The experiment's status does not allow this.",
    413: "The request body is over the server's size limit.",
    429: "The user's cap on unfinished experiments or the submission rate was reached.",
    503: "The database cannot be reached right now (a restart, a failover); try again.",
}

_HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer realm", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    503: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
}


def documented(
    *codes: int, reasons: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error status codes; ``reasons`` puts a route's
    own description in place of the general one."""
    described = {**_REASONS, **(reasons or {})}
    return {
        code: {"model": Problem, "description": described[code]}
        | ({"headers": _HEADERS[code]} if code in _HEADERS else {})
        for code in codes
    }


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""The methods a 405 asks each route about."""


async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 whose ``Allow`` names every method the path has, not only those of the first route
    that matched it (Starlette's default)."""
    allowed = sorted(_methods_of_route_that_refused(exc) | _methods_of_path(request.scope))
    return JSONResponse(
        {"detail": f"{request.method} is not allowed here; use {', '.join(allowed)}."},
        status_code=405,
        headers={"Allow": ", ".join(allowed)},
    )


def _methods_of_route_that_refused(exc: Exception) -> set[str]:
    """The ``Allow`` of the route or mount (the dashboard's files) that raised the 405."""
    headers = getattr(exc, "headers", None) or {}
    return {method.strip() for method in headers.get("Allow", "").split(",") if method.strip()}


def _methods_of_path(scope: Scope) -> set[str]:
    """The methods some route answers on this path (from the app's root, even when a mount
    refused it), asked of each route as if the request had used them: FastAPI keeps an included
    router's routes inside it. A mount is left out: it takes every method, and its own ``Allow``
    says which its app serves."""
    app_scope = {**scope, "root_path": scope.get("app_root_path", scope.get("root_path", ""))}
    return {
        method
        for route in scope["app"].router.routes
        if not isinstance(route, Mount)
        for method in METHODS
        if route.matches({**app_scope, "method": method})[0] == Match.FULL
    }


NO_SUCH_PATH = "Not Found"
"""The detail of the 404 Starlette raises for a path no route or file serves."""


async def not_found(request: Request, exc: Exception) -> JSONResponse:
    """A 404 for a path nothing serves says where to look (the dashboard at ``/``, the API
    reference at ``/docs``); a route's own 404 ("Experiment abc not found.") is kept."""
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if detail == NO_SUCH_PATH:
        path = request.url.path if len(request.url.path) <= 100 else f"{request.url.path[:100]}..."
        detail = (
            f"Nothing is served at {path}: the dashboard is at /, and the API reference, "
            "with every path the API serves, at /docs."
        )
    return JSONResponse({"detail": detail}, status_code=404, headers=exc.headers)


async def status_conflict(request: Request, exc: Exception) -> JSONResponse:
    """409 with the store's sentence: the experiment's status does not allow what was asked."""
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def database_unreachable(request: Request, exc: Exception) -> JSONResponse:
    """503 with a sentence, not a 500 with a traceback, while the database is away; any other
    database error is a bug and stays a 500."""
    if not is_transient(exc):
        raise exc
    return JSONResponse(
        {"detail": "The database cannot be reached right now; try again in a few seconds."},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, except that a NaN or infinite input is echoed as a string: JSON has no
    such numbers, and FastAPI's own handler fails with a 500 on them."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


async def invalid_spec(request: Request, exc: Exception) -> JSONResponse:
    """The same 422 for a spec that does not resolve or would not fit the budget: every spec
    comes from the request body, so its errors are located in it."""
    assert isinstance(exc, SpecError)
    located = [error | {"loc": ("body", *error["loc"])} for error in exc.errors]
    return await invalid_request(request, RequestValidationError(located))


async def invalid_cursor(request: Request, exc: Exception) -> JSONResponse:
    """The same 422 for a paging cursor this server did not hand out, in any listing; the
    cursor is not echoed (it may be long)."""
    error = error_entry(("query", "cursor"), str(exc), None)
    return await invalid_request(request, RequestValidationError([error]))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return value
