"""Studies: variants crossed with seeds, run as ordinary experiments, compared as one table."""

import logging
from typing import Annotated, Any, Literal

from celery import Celery
from fastapi import APIRouter, Body, Depends, Query, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse

from api.deps import (
    AMBIGUOUS,
    CeleryDep,
    EngineDep,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    SettingsDep,
    check_priority,
    find_experiment,
    find_study,
    limit_submissions,
    require_owner,
    visible_owner,
)
from api.errors import documented
from api.limits import check_active_cap
from api.notify import ask_to_notify, check_notify
from api.schemas import (
    BestTrial,
    ComparedRow,
    Comparison,
    StudyCreate,
    StudyPage,
    StudyPublic,
    StudyTable,
)
from core.config import Settings
from jobs import search
from jobs.queueing import publish
from models.budget import check_budget
from models.datasets import check_available
from models.errors import Loc, error_entry
from models.presets import resolve
from models.search import CategoricalParam, SearchSpec
from models.studies import (
    CHAPTER,
    PlannedRun,
    Variant,
    check_size,
    from_grid,
    from_presets,
    from_variants,
    plan,
)
from store import studies
from store.handles import Engine, Session
from store.tables import Experiment, Priority, Study
from store.tokens import Principal
from views import report
from views.report import TableRow, as_csv, markdown

log = logging.getLogger(__name__)

router = APIRouter(tags=["studies"], responses=documented(400, 401), route_class=ReleasingRoute)

TableFormat = Literal["json", "csv", "markdown"]
MAX_COMPARED = 50
"""Experiments one comparison reads (each by its own lookup, then their epochs' times)."""
TABLE_RESPONSES = documented(404, 409, reasons=AMBIGUOUS) | {
    200: {"content": {"text/csv": {}, "text/markdown": {}}}
}

STUDY_EXAMPLES = {
    "chapter": {
        "summary": "The chapter's thirteen presets on digits, two seeds",
        "value": {
            "name": "chapter on digits",
            "template": "chapter",
            "dataset": {"name": "digits"},
            "training": {"epochs": 3, "batch_size": 64},
            "seeds": [0, 1],
        },
    },
    "grid": {
        "summary": "Optimizer x batch norm",
        "value": {
            "dataset": {"name": "digits"},
            "training": {"epochs": 5},
            "grid": {"optimizer.name": ["sgd", "adam"], "model.batch_norm": [False, True]},
        },
    },
}


@router.post(
    "/studies",
    status_code=201,
    response_model=StudyPublic,
    dependencies=[Depends(limit_submissions)],
    responses=documented(413, 429),
)
def submit_study(
    body: Annotated[StudyCreate, Body(openapi_examples=STUDY_EXAMPLES)],
    session: SessionDep,
    engine: EngineDep,
    celery: CeleryDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    response: Response,
) -> StudyPublic:
    """Store a study and all its experiments at once, then queue them (a search starts its
    first trials and asks Optuna for more as they finish). Everything is checked first: an
    answer in 4xx stores nothing."""
    owner = principal.user if principal else None
    _check_size(body)  # a SpecError: 422 (api.errors.invalid_spec)
    if body.search is not None:
        search.validate_space(body.preset, _base(body), body.search, body.seeds[0], settings)
        adding = min(body.search.parallel, body.search.n_trials) * len(body.seeds)
        datasets = _searched_datasets(body, body.search)
    else:
        variants = _variants(body)
        runs = plan(variants, body.seeds)
        for run in runs:
            check_budget(run.spec, settings)
        adding = len(runs)
        datasets = _planned_datasets(body, variants, runs)
    for name, loc in datasets.items():
        check_available(name, settings.resolved_data_dir, loc)
    check_notify(body.notify, settings)
    check_priority(principal, body.priority)
    check_active_cap(session, principal, settings, adding=adding)
    if body.search is not None:
        study = _start_search(body, session, engine, celery, settings, owner)
    else:
        study, experiments = studies.create_study(
            session,
            name=body.name,
            kind=body.kind,
            definition=body.model_dump(mode="json", exclude_unset=True),
            runs=runs,
            seeds=body.seeds,
            owner=owner,
            priority=Priority(body.priority),
        )
        ask_to_notify(study, body.notify)
        session.commit()
        for experiment in experiments:
            publish(engine, celery, experiment.id)  # a miss is left to the sweeper
    response.headers["Location"] = f"/studies/{study.id}"
    return _public(session, engine, study)


@router.get("/studies", response_model=StudyPage)
def list_studies(
    session: SessionDep,
    engine: EngineDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=100,
            description=(
                "At most this many studies; fewer when they would hold over "
                f"{studies.MAX_PAGE_EXPERIMENTS:,} experiments between them (follow next_cursor)."
            ),
        ),
    ] = 20,
    cursor: str | None = None,
) -> StudyPage:
    """Studies, newest first, a page at a time (a bad cursor: api.errors.invalid_cursor)."""
    items, next_cursor = studies.list_studies(
        session, owner=visible_owner(principal, settings), limit=limit, cursor=cursor
    )
    items_public = [_public(session, engine, study) for study in items]
    return StudyPage(items=items_public, next_cursor=next_cursor)


@router.get(
    "/studies/{study_id}",
    response_model=StudyPublic,
    responses=documented(404, 409, reasons=AMBIGUOUS),
)
def read_study(
    study_id: str,
    session: SessionDep,
    engine: EngineDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> StudyPublic:
    """A study's status, progress, experiments and comparison table (and a search's best
    trial)."""
    return _public(session, engine, find_study(session, study_id, principal, settings))


@router.get(
    "/studies/{study_id}/table",
    response_model=StudyTable,
    responses=TABLE_RESPONSES,
)
def read_study_table(
    study_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    format: TableFormat = "json",
) -> StudyTable | Response:
    """The comparison table: one row per variant, mean and standard deviation over seeds."""
    study = find_study(session, study_id, principal, settings)
    rows = report.study_table(session, studies.study_experiments(session, study.id))
    return _render(rows, format)


@router.post(
    "/studies/{study_id}/cancel",
    status_code=202,
    response_model=StudyPublic,
    responses=documented(403, 404, 409, reasons=AMBIGUOUS),
)
def cancel_study(
    study_id: str,
    session: SessionDep,
    engine: EngineDep,
    celery: CeleryDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> StudyPublic:
    """Cancel every experiment of the study that has not finished (a search starts no more
    trials, and Optuna hears how its trials ended)."""
    study = find_study(session, study_id, principal, settings)
    require_owner(principal, study.owner, "cancel this study")
    studies.cancel_study(session, study)
    try:
        search.advance(engine, celery, settings, study.id)
    except Exception:  # the study is cancelled all the same; a later advance tells Optuna
        log.exception(
            "cancelled study %s, but could not tell Optuna how its trials ended", study.id
        )
    return _public(session, engine, study)


IdsQuery = Annotated[
    str, Query(description=f"Experiment ids, comma-separated (at most {MAX_COMPARED}).")
]


@router.get(
    "/compare",
    response_model=Comparison,
    responses=TABLE_RESPONSES,
)
def compare(
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    ids: IdsQuery,
    format: TableFormat = "json",
) -> Comparison | Response:
    """The comparison table for any experiments, one row each (as csv or markdown, each row
    names its run by id, name and status)."""
    experiments = compared_experiments(session, principal, settings, ids)
    rows = report.comparison(session, [(e.name or e.id, [e]) for e in experiments])
    runs = list(zip(experiments, rows, strict=True))
    if format == "csv":
        return Response(report.runs_csv(runs), media_type="text/csv")
    if format == "markdown":
        return PlainTextResponse(report.runs_markdown(runs), media_type="text/markdown")
    return Comparison(
        table=[
            ComparedRow(
                **row.model_dump(),
                experiment_id=run.id,
                name=run.name,
                preset=run.preset,
                status=run.status,
            )
            for run, row in runs
        ]
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


def _base(body: StudyCreate) -> dict[str, Any]:
    """The spec keys every experiment of the study starts from, checked to resolve (its
    errors name body fields)."""
    base = body.overrides()
    resolve(body.preset, base)
    return base


BASE_DATASET: Loc = ("dataset", "name")


def _base_dataset(body: StudyCreate) -> str:
    """The dataset of the study's base spec (its preset with the body's keys)."""
    return resolve(body.preset, body.overrides()).dataset.name


def _planned_datasets(
    body: StudyCreate, variants: list[Variant], runs: list[PlannedRun]
) -> dict[str, Loc]:
    """Each dataset the runs train on, located at the field that chose it: the base's, or
    the first variant (or grid key) that names another."""
    base = _base_dataset(body)
    located = {variant.name: variant.loc for variant in variants}
    used: dict[str, Loc] = {}
    for run in runs:
        name = run.spec.dataset.name
        loc = located[run.variant]
        where = ("grid", "dataset.name") if loc == ("grid",) else (*loc, *BASE_DATASET)
        used.setdefault(name, BASE_DATASET if name == base else where)
    return used


def _searched_datasets(body: StudyCreate, spec: SearchSpec) -> dict[str, Loc]:
    """Each dataset a search's trials may train on: the searched choices, else the base's."""
    searched = spec.space.get("dataset.name")
    if isinstance(searched, CategoricalParam):
        return {str(choice): ("search", "space", "dataset.name") for choice in searched.choices}
    return {_base_dataset(body): BASE_DATASET}


def _check_size(body: StudyCreate) -> None:
    """The study's runs counted from the body alone, before any variant is made: at most
    MAX_EXPERIMENTS (a search: its trials, each once per seed)."""
    seeds = len(body.seeds)
    match body.kind:
        case "search":
            assert body.search is not None
            check_size("trials", [body.search.n_trials], seeds, ("search", "n_trials"))
        case "grid":
            grid = body.grid or {}
            check_size("grid", [len(values) for values in grid.values()], seeds, ("grid",))
        case "template":
            check_size("variants", [len(CHAPTER)], seeds, ("template",))
        case kind:
            check_size("variants", [len(getattr(body, kind) or [])], seeds, (kind,))


def _variants(body: StudyCreate) -> list[Variant]:
    base = _base(body)
    match body.kind:
        case "template":
            return from_presets(CHAPTER, base, ("template",))
        case "presets":
            return from_presets(body.presets or [], base, ("presets",))
        case "variants":
            items = [item.model_dump(exclude_unset=True) for item in body.variants or []]
            return from_variants(items, body.preset, base)
        case "grid":
            return from_grid(body.grid or {}, body.preset, base)
    raise AssertionError(f"unhandled study kind {body.kind}")


def _start_search(
    body: StudyCreate,
    session: Session,
    engine: Engine,
    celery: Celery,
    settings: Settings,
    owner: str | None,
) -> Study:
    """Store a checked search and start its first trials."""
    study = studies.create_search_study(
        session,
        name=body.name,
        definition=body.model_dump(mode="json"),
        seeds=body.seeds,
        owner=owner,
        priority=Priority(body.priority),
    )
    ask_to_notify(study, body.notify)
    session.commit()
    search.create(settings.resolved_database_url, study)
    search.advance(engine, celery, settings, study.id)
    return study


def _public(session: Session, engine: Engine, study: Study) -> StudyPublic:
    session.refresh(study)
    experiments = studies.study_experiments(session, study.id)
    status = studies.status_of(experiments, search.trials_to_come(study))
    progress = studies.progress(experiments)
    best = None
    if study.kind == "search":
        planned = search.search_of(study).n_trials
        progress |= {"trials_started": study.trials_started, "trials_planned": planned}
        best = search.best_trial(engine, study, experiments)
    return StudyPublic(
        id=study.id,
        name=study.name,
        kind=study.kind,
        status=status,
        priority=study.priority,
        created_at=study.created_at,
        seeds=study.seeds,
        variants=studies.variants(experiments),
        progress=progress,
        experiment_ids=[experiment.id for experiment in experiments],
        table=report.study_table(session, experiments),
        best_trial=BestTrial.model_validate(best) if best else None,
        notify=study.notify_url,
        notification=study.notification,
    )


def _render(rows: list[TableRow], format: TableFormat) -> StudyTable | Response:
    if format == "csv":
        return Response(as_csv(rows), media_type="text/csv")
    if format == "markdown":
        return PlainTextResponse(markdown(rows), media_type="text/markdown")
    return StudyTable(table=rows)
