"""Everything under /studies: one router, its parts in the order they are matched."""

from fastapi import APIRouter

from api.routes.studies import events, exports, importance, plots, records, runs, seeds

router = APIRouter()
for part in (records, seeds, events, plots, runs, exports, importance):
    router.include_router(part.router)
