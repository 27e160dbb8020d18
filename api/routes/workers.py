"""The training processes the server has heard from lately, and what each is running."""

from fastapi import APIRouter

from api.deps import ReleasingRoute, SessionDep, SettingsDep
from api.errors import documented
from api.schemas import AcceleratorPublic, WorkerPublic
from store.workers import live_workers

router = APIRouter(tags=["workers"], route_class=ReleasingRoute)


@router.get("/workers", response_model=list[WorkerPublic], responses=documented(400, 401))
def list_workers(session: SessionDep, settings: SettingsDep) -> list[WorkerPublic]:
    """Each training process heard from in the last ``CONVLAB_WORKERS_SEEN_S`` (60 s), by host:
    its accelerator, the experiment it runs, when it started and last beat."""
    return [
        WorkerPublic(
            name=live.record.name,
            host=live.record.host,
            pid=live.record.pid,
            accelerator=AcceleratorPublic(
                name=live.record.accelerator, memory_mb=live.record.accelerator_memory_mb
            ),
            experiment_id=live.experiment_id,
            started_at=live.record.started_at,
            heartbeat_at=live.record.heartbeat_at,
        )
        for live in live_workers(session, seen_within_s=settings.workers_seen_s)
    ]
