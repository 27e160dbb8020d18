"""The training processes the server has heard from lately, and what each is running."""

from fastapi import APIRouter

from api.deps import PrincipalDep, ReleasingRoute, SessionDep, SettingsDep, visible_owner
from api.errors import documented
from api.schemas import AcceleratorPublic, WorkerPublic
from store.db import Session
from store.lookups import status_and_owner
from store.workers import live_workers

router = APIRouter(tags=["workers"], route_class=ReleasingRoute)


@router.get("/workers", response_model=list[WorkerPublic], responses=documented(400, 401))
def list_workers(
    session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> list[WorkerPublic]:
    """Each training process heard from within a lease (``CONVLAB_LEASE_SECONDS``, 60 s), by host:
    its accelerator, its slot (``CONVLAB_JOBS_PER_GPU``) and share of the GPU's memory, the
    experiment it runs (``null`` when it is someone else's and reads are owner-only), when it
    started and last beat."""
    owner = visible_owner(principal, settings)
    return [
        WorkerPublic(
            name=live.record.name,
            host=live.record.host,
            pid=live.record.pid,
            accelerator=AcceleratorPublic(
                name=live.record.accelerator, memory_mb=live.record.accelerator_memory_mb
            ),
            experiment_id=_shown(session, live.experiment_id, owner),
            started_at=live.record.started_at,
            heartbeat_at=live.record.heartbeat_at,
            slot=live.record.slot,
            slots=live.record.slots,
            gpu_memory_limit_mb=live.record.gpu_memory_limit_mb,
        )
        for live in live_workers(session, seen_within_s=settings.workers_seen_s)
    ]


def _shown(session: Session, experiment_id: str | None, owner: str | None) -> str | None:
    """``experiment_id`` if reads are not limited to ``owner``, or it is ``owner``'s."""
    if experiment_id is None or owner is None:
        return experiment_id
    found = status_and_owner(session, experiment_id=experiment_id)
    return experiment_id if found is not None and found[1] == owner else None
