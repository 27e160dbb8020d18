"""An experiment's learning curves as an image (``api.plot_images``)."""

from functools import lru_cache, partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api.deps import (
    EngineDep,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    SettingsDep,
    find_experiment,
)
from api.plot_images import IMAGE, PLOT_RESPONSES, FormatPath, IfNoneMatch, image, version_of
from store.db import Engine, session_scope
from store.experiments import ancestry, history, lineage
from store.lookups import experiment_by_id
from store.tables import Experiment
from views import plots

router = APIRouter(tags=["plots"], responses=PLOT_RESPONSES, route_class=ReleasingRoute)


@router.get("/experiments/{experiment_id}/plot.{fmt}", response_class=Response, responses=IMAGE)
def experiment_plot(
    experiment_id: str,
    fmt: FormatPath,
    session: SessionDep,
    engine: EngineDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    if_none_match: IfNoneMatch = None,
    lineage: Annotated[
        bool,
        Query(
            description="A continued experiment's curves joined after its parents', a dotted "
            "line where each run continues the one before."
        ),
    ] = False,
) -> Response:
    """The chapter's two panels: accuracy and val_accuracy, loss and val_loss per epoch."""
    experiment = find_experiment(session, experiment_id, principal, settings)
    version = version_of(session, [experiment])
    if lineage:
        version = (*version, tuple(ancestry(session, experiment)))
    render = partial(_render_experiment, joined=lineage)
    return image(if_none_match, fmt, version, render, engine, experiment.id)


@lru_cache(maxsize=128)
def _render_experiment(
    engine: Engine,
    experiment_id: str,
    version: tuple[Any, ...],
    fmt: plots.ImageFormat,
    joined: bool = False,
) -> bytes:
    """The experiment's curves; ``joined``, after those of the runs it continues."""
    with session_scope(engine) as session:
        experiment = experiment_by_id(session, experiment_id=experiment_id)
        assert experiment is not None
        if joined:
            parts = [rows for _, rows in lineage(session, experiment) if rows]
        else:
            parts = [history(session, experiment_id)]
        title = _title(experiment)
    epochs = [row for rows in parts for row in rows]
    return plots.experiment_plot(title, epochs, fmt, joins=[rows[0].epoch for rows in parts[1:]])


def _title(experiment: Experiment) -> str:
    return (
        f"{experiment.name or experiment.preset}: {experiment.status}, "
        f"{experiment.epochs_done}/{experiment.epochs_total} epochs"
    )
