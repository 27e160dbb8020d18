"""Learning curves as PNG or SVG images, rendered once per change of the history they show
(an ETag lets a browser or script revalidate for free)."""

import hashlib
from functools import lru_cache, partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response

from api.deps import (
    EngineDep,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    SettingsDep,
    find_experiment,
    find_study,
)
from api.errors import documented
from api.routes.studies import IdsQuery, compared_experiments
from models.epochs import EpochMetrics
from models.study_state import by_variant, first_within
from store.db import Engine, Session, session_scope
from store.experiments import ancestry, history, lineage, newest_epoch_at
from store.lookups import experiment_by_id, study_by_id
from store.studies import study_experiments
from store.tables import Experiment
from views import plots
from views.report import by_spec

router = APIRouter(tags=["plots"], responses=documented(400, 401, 404), route_class=ReleasingRoute)

IMAGE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {media: {} for media in plots.MEDIA_TYPES.values()},
        "description": "The curves as an image.",
    },
    304: {"description": "Unchanged since the ETag sent in If-None-Match."},
}
FormatPath = Annotated[plots.ImageFormat, Path(description="png or svg")]
IfNoneMatch = Annotated[str | None, Header()]
MAX_PLOTTED_EXPERIMENTS = 100
"""A study plot draws its first variants while they hold at most this many experiments (the
first variant always: it has at most 20 seeds), reading each one's history."""


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
    version = _version(session, [experiment])
    if lineage:
        version = (*version, tuple(ancestry(session, experiment)))
    render = partial(_render_experiment, joined=lineage)
    return _image(if_none_match, fmt, version, render, engine, experiment.id)


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
    version = _version(session, study_experiments(session, study.id))
    return _image(if_none_match, fmt, version, _render_study, engine, study.id)


@router.get("/compare/plot.{fmt}", response_class=Response, responses=IMAGE)
def compare_plot(
    fmt: FormatPath,
    ids: IdsQuery,
    session: SessionDep,
    engine: EngineDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The runs' val_accuracy and val_loss per epoch, overlaid; runs of one spec that differ
    only in seed are drawn as one mean ± std band."""
    experiments = compared_experiments(session, principal, settings, ids)
    version = _version(session, experiments)
    key = ",".join(experiment.id for experiment in experiments)
    return _image(if_none_match, fmt, version, _render_compare, engine, key)


def _version(session: Session, experiments: list[Experiment]) -> tuple[Any, ...]:
    """What the picture depends on: each run's status and epochs, and the newest epoch row
    (a resumed run rewrites epochs it had)."""
    newest = newest_epoch_at(session, experiment_ids=[e.id for e in experiments])
    runs = tuple((e.id, e.name, e.status, e.epochs_done, e.epochs_total) for e in experiments)
    return runs, str(newest)


def _image(
    if_none_match: str | None,
    fmt: plots.ImageFormat,
    version: tuple[Any, ...],
    render: Any,
    engine: Engine,
    key: str,
) -> Response:
    etag = '"' + hashlib.sha256(repr((key, version, fmt)).encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    content = render(engine, key, version, fmt)
    return Response(content, media_type=plots.MEDIA_TYPES[fmt], headers=headers)


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


@lru_cache(maxsize=32)
def _render_study(
    engine: Engine, study_id: str, version: tuple[Any, ...], fmt: plots.ImageFormat
) -> bytes:
    with session_scope(engine) as session:
        groups = by_variant(study_experiments(session, study_id))
        sized = [((variant, members), len(members)) for variant, members in groups]
        shown = first_within(sized, MAX_PLOTTED_EXPERIMENTS)
        curves = _curves(session, shown)
        study = study_by_id(session, study_id=study_id)
        title = f"{study.name if study and study.name else 'Study'}: test curves, mean over seeds"
    if len(shown) < len(groups):
        title += f" (first {len(shown)} of {len(groups)} variants)"
    return plots.overlay_plot(title, curves, fmt)


@lru_cache(maxsize=32)
def _render_compare(
    engine: Engine, ids: str, version: tuple[Any, ...], fmt: plots.ImageFormat
) -> bytes:
    with session_scope(engine) as session:
        found = (experiment_by_id(session, experiment_id=key) for key in ids.split(","))
        curves = _curves(session, by_spec([e for e in found if e is not None]))
    title = "Compared runs: test curves (one spec's seeds as mean ± std)"
    return plots.overlay_plot(title, curves, fmt)


def _curves(
    session: Session, groups: list[tuple[str, list[Experiment]]]
) -> list[tuple[str, list[list[EpochMetrics]]]]:
    """Each labelled group's runs' histories."""
    return [
        (label, [history(session, experiment.id) for experiment in members])
        for label, members in groups
    ]
