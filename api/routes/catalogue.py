"""What can be run (presets; datasets are in ``api.routes.datasets``) and whether this server
can run it (health, ready)."""

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import CeleryDep, PrincipalDep, ReleasingRoute, SessionDep, SettingsDep
from api.errors import documented
from api.metrics import ApiMetrics
from api.schemas import Health, PresetPublic, Readiness
from models.presets import PRESETS
from store.monitoring import ping
from store.workers import live_workers

log = logging.getLogger(__name__)

NO_WORKER = "no worker has been heard from; start one with make up"
"""/ready's note while no worker is up: queued runs wait for one."""

router = APIRouter(tags=["catalogue"], route_class=ReleasingRoute)


@router.get("/presets", response_model=list[PresetPublic], responses=documented(400, 401))
def list_presets() -> list[PresetPublic]:
    """The chapter's variants, each with its full spec."""
    return [
        PresetPublic(name=preset.name, description=preset.description, spec=preset.spec)
        for preset in PRESETS.values()
    ]


@router.get("/health", response_model=Health)
async def health() -> Health:
    """200 while the process serves (answered on the event loop: no thread, no database)."""
    return Health(status="ok")


@router.get(
    "/ready", response_model=Readiness, responses=documented(400, 401) | {503: {"model": Readiness}}
)
def ready(
    session: SessionDep, celery: CeleryDep, settings: SettingsDep
) -> Readiness | JSONResponse:
    """200 when the database and the broker answer, else 503 naming which does not; how many
    workers were heard from lately, with a sentence when none was (queued runs wait)."""
    database = broker = "ok"
    workers = None
    try:
        ping(session)
        workers = len(live_workers(session, seen_within_s=settings.workers_seen_s))
    except Exception as exc:
        database = _unreachable("database", exc)
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
    except Exception as exc:
        broker = _unreachable("broker", exc)
    readiness = Readiness(
        status="ok" if database == broker == "ok" else "unavailable",
        database=database,
        broker=broker,
        workers=workers,
        note=NO_WORKER if workers == 0 else None,
    )
    if readiness.status != "ok":
        return JSONResponse(readiness.model_dump(), status_code=503)
    return readiness


def _unreachable(service: str, exc: Exception) -> str:
    """Log why ``service`` failed (its message may hold host names, ports, credentials) and
    say only that it did, and with which kind of error, to the caller."""
    log.warning("/ready: the %s is unreachable: %s: %s", service, type(exc).__name__, exc)
    return f"unreachable ({type(exc).__name__})"


@router.get(
    "/metrics",
    response_class=Response,
    responses=documented(400, 401) | {200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request, principal: PrincipalDep) -> Response:
    """Prometheus metrics in the text exposition format; the per-user figures to admins only."""
    collected: ApiMetrics = request.app.state.metrics
    if not collected.shared:  # several processes: the lock holder counts, in its loop
        collected.epochs.observe_new()
    admin = principal is None or principal.admin  # with auth off, everyone is
    return Response(collected.exposition(per_user=admin), media_type=CONTENT_TYPE_LATEST)
