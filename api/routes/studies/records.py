"""Studies: variants crossed with seeds, run as ordinary experiments, compared as one table."""

import logging
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Response
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
    find_study,
    limit_submissions,
    require_owner,
    visible_owner,
)
from api.errors import documented
from api.notify import check_notify
from api.schemas import (
    BestTrial,
    StudyCreate,
    StudyPage,
    StudyPublic,
    StudyTable,
)
from api.submit import placement_warnings, store_and_publish
from api.tables import TABLE_RESPONSES, BaselineQuery, TableFormat, baseline_index
from jobs import search
from models import study_state
from models.budget import check_budget
from models.datasets import check_available
from models.status import Priority
from models.studies import (
    check_study_size,
    checked_base,
    plan,
    planned_datasets,
    searched_datasets,
    study_variants,
)
from models.study_state import by_variant
from models.trials import validate_space
from store import studies
from store.db import Engine, Session
from store.tables import Experiment, Study
from views import report
from views.report import TableRow, as_csv, markdown

log = logging.getLogger(__name__)

router = APIRouter(tags=["studies"], responses=documented(400, 401), route_class=ReleasingRoute)

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
    asked = body.asked()
    check_study_size(asked)  # a SpecError: 422 (api.errors.invalid_spec)
    if body.search is not None:
        validate_space(body.preset, checked_base(asked), body.search, body.seeds[0], settings)
        adding = min(body.search.parallel, body.search.n_trials) * len(body.seeds)
        datasets = searched_datasets(asked, body.search)
    else:
        variants = study_variants(asked)
        runs = plan(variants, body.seeds)
        for run in runs:
            check_budget(run.spec, settings)
        adding = len(runs)
        datasets = planned_datasets(asked, variants, runs)
    for name, loc in datasets.items():
        check_available(name, settings.resolved_data_dir, loc)
    check_notify(body.notify, settings)
    check_priority(principal, body.priority)
    priority = Priority(body.priority)
    if body.search is not None:

        def store() -> tuple[Study, list[Experiment]]:
            stored = studies.create_search_study(
                session,
                name=body.name,
                definition=body.model_dump(mode="json"),
                seeds=body.seeds,
                owner=owner,
                priority=priority,
            )
            return stored, []  # its first trials start once it is committed

    else:

        def store() -> tuple[Study, list[Experiment]]:
            return studies.create_study(
                session,
                name=body.name,
                kind=body.kind,
                definition=body.model_dump(mode="json", exclude_unset=True),
                runs=runs,
                seeds=body.seeds,
                owner=owner,
                priority=priority,
            )

    study = store_and_publish(
        session,
        engine,
        celery,
        principal,
        settings,
        response,
        adding=adding,
        store=store,
        notify=body.notify,
    )
    if body.search is not None:
        search.create(settings.resolved_database_url, study)
        search.advance(engine, celery, settings, study.id)
    shown = public(session, engine, study)
    members = studies.study_experiments(session, study.id)
    shown.warnings = placement_warnings(session, [member.spec for member in members])
    return shown


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
    items_public = [public(session, engine, study) for study in items]
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
    return public(session, engine, find_study(session, study_id, principal, settings))


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
    baseline: BaselineQuery = None,
) -> StudyTable | Response:
    """The comparison table: one row per variant, mean and standard deviation over seeds, and
    each other variant's difference to the baseline's (Welch's t-test over seeds)."""
    study = find_study(session, study_id, principal, settings)
    groups = by_variant(studies.study_experiments(session, study.id))
    index = baseline_index(groups, baseline, "this study")
    rows = report.comparison(session, groups, index)
    return _render(rows, rows[index].variant if rows else None, format)


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
    return public(session, engine, study)


def public(session: Session, engine: Engine, study: Study) -> StudyPublic:
    """The study as its routes answer: status, progress, experiments and table."""
    session.refresh(study)
    experiments = studies.study_experiments(session, study.id)
    status = study_state.status_of(experiments, search.trials_to_come(study))
    progress = study_state.progress(experiments)
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
        variants=study_state.variants(experiments),
        progress=progress,
        experiment_ids=[experiment.id for experiment in experiments],
        table=report.study_table(session, experiments),
        best_trial=BestTrial.model_validate(best) if best else None,
        notify=study.notify_url,
        notification=study.notification,
    )


def _render(
    rows: list[TableRow], baseline: str | None, format: TableFormat
) -> StudyTable | Response:
    if format == "csv":
        return Response(as_csv(rows), media_type="text/csv")
    if format == "markdown":
        return PlainTextResponse(markdown(rows, baseline or ""), media_type="text/markdown")
    return StudyTable(baseline=baseline, table=rows)
