"""Everything under /studies: one router, its parts in the order they are matched."""

from fastapi import APIRouter

from api.routes.studies import events, exports, plots, records, seeds

router = APIRouter()
for part in (records, seeds, events, plots, exports):
    router.include_router(part.router)
