"""Studies: variants crossed with seeds, run as ordinary experiments, compared as one table."""

from typing import Annotated, Literal

from fastapi import APIRouter, Body, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from sqlmodel import Session

from api.deps import CeleryDep, EngineDep, SessionDep
from api.schemas import Comparison, StudyCreate, StudyPage, StudyPublic
from core import studies as crud
from core.experiments import InvalidCursor
from core.queueing import publish
from core.report import TableRow, as_csv, markdown
from core.tables import Experiment, Study
from models.presets import SpecError, error_entry, resolve
from models.studies import CHAPTER, Variant, from_grid, from_presets, from_variants, plan

router = APIRouter(tags=["studies"])

TableFormat = Literal["json", "csv", "markdown"]

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


@router.post("/studies", status_code=201, response_model=StudyPublic)
def submit_study(
    body: Annotated[StudyCreate, Body(openapi_examples=STUDY_EXAMPLES)],
    session: SessionDep,
    engine: EngineDep,
    celery: CeleryDep,
    response: Response,
) -> StudyPublic:
    """Store a study and all its experiments at once, then queue them."""
    try:
        runs = plan(_variants(body), body.seeds)
    except SpecError as exc:
        raise RequestValidationError(
            [error | {"loc": ("body", *error["loc"])} for error in exc.errors]
        ) from None
    study, experiments = crud.create_study(
        session,
        name=body.name,
        kind=body.kind,
        definition=body.model_dump(mode="json", exclude_unset=True),
        runs=runs,
        seeds=body.seeds,
    )
    session.commit()
    for experiment in experiments:
        publish(engine, celery, experiment.id)  # a miss is left to the sweeper
    response.headers["Location"] = f"/studies/{study.id}"
    return _public(session, study)


@router.get("/studies", response_model=StudyPage)
def list_studies(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> StudyPage:
    """Studies, newest first, a page at a time."""
    try:
        items, next_cursor = crud.list_studies(session, limit=limit, cursor=cursor)
    except InvalidCursor as exc:
        raise RequestValidationError([error_entry(("query", "cursor"), str(exc), cursor)]) from None
    return StudyPage(items=[_public(session, study) for study in items], next_cursor=next_cursor)


@router.get("/studies/{study_id}", response_model=StudyPublic)
def read_study(study_id: str, session: SessionDep) -> StudyPublic:
    """A study's status, progress, experiments and comparison table."""
    return _public(session, _find(session, study_id))


@router.get(
    "/studies/{study_id}/table",
    response_model=Comparison,
    responses={200: {"content": {"text/csv": {}, "text/markdown": {}}}},
)
def read_study_table(
    study_id: str, session: SessionDep, format: TableFormat = "json"
) -> Comparison | Response:
    """The comparison table: one row per variant, mean and standard deviation over seeds."""
    study = _find(session, study_id)
    rows = crud.study_table(session, crud.study_experiments(session, study.id))
    return _render(rows, format)


@router.post("/studies/{study_id}/cancel", status_code=202, response_model=StudyPublic)
def cancel_study(study_id: str, session: SessionDep) -> StudyPublic:
    """Cancel every experiment of the study that has not finished."""
    study = _find(session, study_id)
    crud.cancel_study(session, study)
    return _public(session, study)


@router.get(
    "/compare",
    response_model=Comparison,
    responses={200: {"content": {"text/csv": {}, "text/markdown": {}}}},
)
def compare(
    session: SessionDep,
    ids: Annotated[str, Query(description="Experiment ids, comma-separated.")],
    format: TableFormat = "json",
) -> Comparison | Response:
    """The comparison table for any experiments, one row each."""
    wanted = [part.strip() for part in ids.split(",") if part.strip()]
    if not 1 <= len(wanted) <= 200:
        raise RequestValidationError(
            [error_entry(("query", "ids"), "give 1 to 200 experiment ids", ids)]
        )
    groups = []
    for experiment_id in wanted:
        experiment = session.get(Experiment, experiment_id)
        if experiment is None:
            raise HTTPException(404, f"Experiment {experiment_id} not found.")
        groups.append((experiment.name or experiment.id, [experiment]))
    return _render(crud.comparison(session, groups), format)


def _variants(body: StudyCreate) -> list[Variant]:
    base = body.overrides()
    resolve(body.preset, base)  # the base itself must be valid; its errors name body fields
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
    raise SpecError(
        [error_entry(("search",), "Optuna search studies are not available yet", body.search)]
    )


def _find(session: Session, study_id: str) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        raise HTTPException(404, f"Study {study_id} not found.")
    return study


def _public(session: Session, study: Study) -> StudyPublic:
    experiments = crud.study_experiments(session, study.id)
    return StudyPublic(
        id=study.id,
        name=study.name,
        kind=study.kind,
        status=crud.status_of(experiments),
        created_at=study.created_at,
        seeds=study.seeds,
        variants=crud.variants(experiments),
        progress=crud.progress(experiments),
        experiment_ids=[experiment.id for experiment in experiments],
        table=crud.study_table(session, experiments),
    )


def _render(rows: list[TableRow], format: TableFormat) -> Comparison | Response:
    if format == "csv":
        return Response(as_csv(rows), media_type="text/csv")
    if format == "markdown":
        return PlainTextResponse(markdown(rows), media_type="text/markdown")
    return Comparison(table=rows)
