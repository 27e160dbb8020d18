"""Everything under /experiments: one router, its parts in the order they are matched."""

from fastapi import APIRouter

from api.routes.experiments import (
    evaluation,
    events,
    exports,
    lifecycle,
    plots,
    records,
    trained,
    verify,
)

router = APIRouter()
for part in (records, lifecycle, verify, events, plots, evaluation, trained, exports):
    router.include_router(part.router)
