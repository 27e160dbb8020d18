"""A study's learning curves as an image (``api.plot_images``)."""

from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Response

from api.deps import (
    EngineDep,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    SettingsDep,
    find_study,
)
from api.plot_images import (
    IMAGE,
    PLOT_RESPONSES,
    FormatPath,
    IfNoneMatch,
    group_histories,
    image,
    version_of,
)
from models.study_state import by_variant, first_within
from store.db import Engine, session_scope
from store.lookups import study_by_id
from store.studies import study_experiments
from views import plots

router = APIRouter(tags=["plots"], responses=PLOT_RESPONSES, route_class=ReleasingRoute)

MAX_PLOTTED_EXPERIMENTS = 100
"""A study plot draws its first variants while they hold at most this many experiments (the
first variant always: it has at most 20 seeds), reading each one's history."""


@router.get("/studies/{study_id}/plot.{fmt}", response_class=Response, responses=IMAGE)
def study_plot(
    study_id: str,
    fmt: FormatPath,
    session: SessionDep,
    engine: EngineDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Every variant's val_accuracy and val_loss per epoch (mean over seeds), overlaid; the
    first variants only (the title says so) when they hold over 100 experiments."""
    study = find_study(session, study_id, principal, settings)
    version = version_of(session, study_experiments(session, study.id))
    return image(if_none_match, fmt, version, _render_study, engine, study.id)


@lru_cache(maxsize=32)
def _render_study(
    engine: Engine, study_id: str, version: tuple[Any, ...], fmt: plots.ImageFormat
) -> bytes:
    with session_scope(engine) as session:
        groups = by_variant(study_experiments(session, study_id))
        sized = [((variant, members), len(members)) for variant, members in groups]
        shown = first_within(sized, MAX_PLOTTED_EXPERIMENTS)
        curves = group_histories(session, shown)
        study = study_by_id(session, study_id=study_id)
        title = f"{study.name if study and study.name else 'Study'}: test curves, mean over seeds"
    if len(shown) < len(groups):
        title += f" (first {len(shown)} of {len(groups)} variants)"
    return plots.overlay_plot(title, curves, fmt)
