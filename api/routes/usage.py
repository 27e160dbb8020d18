"""What each user's work holds of the shared server: runs going and waiting, stored weights,
and the storage quota."""

from dataclasses import asdict

from fastapi import APIRouter

from api.deps import PrincipalDep, ReleasingRoute, SessionDep, SettingsDep
from api.errors import documented
from api.schemas import UsagePublic
from store.storage import usage

router = APIRouter(tags=["workers"], route_class=ReleasingRoute)


@router.get("/usage", response_model=list[UsagePublic], responses=documented(401))
def read_usage(
    session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> list[UsagePublic]:
    """Per user: runs running, queued and paused, the bytes their weights hold, and the quota.
    A user sees their own line; an admin (or anyone while auth is off) everyone's."""
    user = None if principal is None or principal.admin else principal.user
    quota = settings.storage_quota_mb
    quota_bytes = None if quota is None else int(quota * 2**20)
    return [UsagePublic(**asdict(line), quota_bytes=quota_bytes) for line in usage(session, user)]
