"""Any experiments side by side: the comparison table and their curves overlaid."""

from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse

from api.deps import (
    EngineDep,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    SettingsDep,
    find_experiment,
)
from api.errors import documented
from api.plot_images import (
    IMAGE,
    PLOT_RESPONSES,
    FormatPath,
    IfNoneMatch,
    group_histories,
    image,
    version_of,
)
from api.schemas import ComparedRow, Comparison
from api.tables import TABLE_RESPONSES, BaselineQuery, TableFormat, baseline_index
from core.config import Settings
from models.errors import error_entry
from store.db import Engine, Session, session_scope
from store.lookups import experiment_by_id
from store.studies import seconds_per_epoch
from store.tables import Experiment
from store.tokens import Principal
from views import plots, report
from views.report import by_spec

router = APIRouter(prefix="/compare", responses=documented(400, 401), route_class=ReleasingRoute)
"""Its table is tagged and answers as the studies' tables, its plot as the other plots."""

MAX_COMPARED = 50
"""Experiments one comparison reads (each by its own lookup, then their epochs' times)."""
IdsQuery = Annotated[
    str, Query(description=f"Experiment ids, comma-separated (at most {MAX_COMPARED}).")
]


@router.get("", response_model=Comparison, tags=["studies"], responses=TABLE_RESPONSES)
def compare(
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    ids: IdsQuery,
    format: TableFormat = "json",
    baseline: BaselineQuery = None,
) -> Comparison | Response:
    """The comparison table for any experiments, one row each (as csv or markdown, each row
    names its run by id, name and status); runs of one spec that differ only in seed pool into
    a group, and each group is compared with the baseline's over its seeds (Welch)."""
    experiments = compared_experiments(session, principal, settings, ids)
    groups = by_spec(experiments)
    index = baseline_index(groups, baseline, "the compared runs")
    seconds = seconds_per_epoch(session, [experiment.id for experiment in experiments])
    pooled = report.table(groups, seconds, index)
    group_of = {
        run.id: row for row, (_, members) in zip(pooled, groups, strict=True) for run in members
    }
    alone = report.table([(e.name or e.id, [e]) for e in experiments], seconds)
    runs = [
        (run, row.model_copy(update={"difference": group_of[run.id].difference}))
        for run, row in zip(experiments, alone, strict=True)
    ]
    label = pooled[index].variant
    if format == "csv":
        return Response(report.runs_csv(runs), media_type="text/csv")
    if format == "markdown":
        return PlainTextResponse(report.runs_markdown(runs, label), media_type="text/markdown")
    return Comparison(
        baseline=label,
        table=[
            ComparedRow(
                **row.model_dump(),
                experiment_id=run.id,
                name=run.name,
                preset=run.preset,
                status=run.status,
                group=group_of[run.id].variant,
            )
            for run, row in runs
        ],
        groups=pooled,
    )


def compared_experiments(
    session: Session, principal: Principal | None, settings: Settings, ids: str
) -> list[Experiment]:
    """The experiments named in a comparison's ``ids`` (ids or unique prefixes), each once, in
    order (422 for none or over ``MAX_COMPARED``; 404 for one not found or not visible, 409
    for an ambiguous prefix)."""
    wanted = list(dict.fromkeys(part.strip() for part in ids.split(",") if part.strip()))
    if not 1 <= len(wanted) <= MAX_COMPARED:
        message = f"give at most {MAX_COMPARED} experiment ids (and at least one)"
        raise RequestValidationError([error_entry(("query", "ids"), message, ids)])
    found = (find_experiment(session, key, principal, settings) for key in wanted)
    return list({experiment.id: experiment for experiment in found}.values())


@router.get(
    "/plot.{fmt}", response_class=Response, tags=["plots"], responses=PLOT_RESPONSES | IMAGE
)
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
    version = version_of(session, experiments)
    key = ",".join(experiment.id for experiment in experiments)
    return image(if_none_match, fmt, version, _render_compare, engine, key)


@lru_cache(maxsize=32)
def _render_compare(
    engine: Engine, ids: str, version: tuple[Any, ...], fmt: plots.ImageFormat
) -> bytes:
    with session_scope(engine) as session:
        found = (experiment_by_id(session, experiment_id=key) for key in ids.split(","))
        curves = group_histories(session, by_spec([e for e in found if e is not None]))
    title = "Compared runs: test curves (one spec's seeds as mean ± std)"
    return plots.overlay_plot(title, curves, fmt)
