"""What each user's work holds of the shared server: runs going and waiting, stored weights,
and the storage quota."""

from collections import defaultdict
from dataclasses import asdict

from fastapi import APIRouter

from api.deps import PrincipalDep, ReleasingRoute, SessionDep, SettingsDep
from api.errors import documented
from api.schemas import UsagePublic
from models.datasets import custom_datasets
from store.storage import Usage, usage

router = APIRouter(tags=["workers"], route_class=ReleasingRoute)


@router.get("/usage", response_model=list[UsagePublic], responses=documented(401))
def read_usage(
    session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> list[UsagePublic]:
    """Per user: runs running, queued and paused, the bytes their weights and their dataset
    uploads hold, and the quota.
    A user sees their own line; an admin (or anyone while auth is off) everyone's."""
    user = None if principal is None or principal.admin else principal.user
    everyone = user is None
    quota = settings.storage_quota_mb
    quota_bytes = None if quota is None else int(quota * 2**20)
    uploads: dict[str | None, list[int]] = defaultdict(list)
    for info in custom_datasets(settings.resolved_data_dir):
        if info.kind == "upload" and (everyone or info.owner == user):
            uploads[info.owner].append(info.size_bytes or 0)
    lines = {line.user: line for line in usage(session, user)}
    for owner in uploads.keys() - lines.keys():
        lines[owner] = Usage(owner, running=0, queued=0, paused=0, stored_bytes=0)
    return [
        UsagePublic(
            **asdict(line),
            uploads=len(uploads[name]),
            upload_bytes=sum(uploads[name]),
            quota_bytes=quota_bytes,
        )
        for name, line in sorted(lines.items(), key=lambda item: item[0] or "")
    ]
