"""More seeds for a study: its variants queued again at new seeds, through the one submit
sequence, so the table's differences rest on more runs."""

import dataclasses
import json

from fastapi import APIRouter, Depends, HTTPException, Response

from api.deps import (
    AMBIGUOUS,
    CeleryDep,
    EngineDep,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    SettingsDep,
    find_study,
    limit_submissions,
    require_owner,
)
from api.errors import documented
from api.routes.studies.records import public
from api.schemas import SeedsCreate, StudyCreate, StudyPublic
from api.submit import store_and_publish
from models.budget import check_budget
from models.datasets import check_available
from models.studies import check_study_size, new_seeds, plan, planned_datasets, study_variants
from store import studies
from store.tables import Experiment, Study

router = APIRouter(tags=["studies"], responses=documented(400, 401), route_class=ReleasingRoute)


@router.post(
    "/studies/{study_id}/seeds",
    status_code=202,
    response_model=StudyPublic,
    dependencies=[Depends(limit_submissions)],
    responses=documented(403, 404, 409, 413, 429, reasons=AMBIGUOUS),
)
def add_seeds(
    study_id: str,
    body: SeedsCreate,
    session: SessionDep,
    engine: EngineDep,
    celery: CeleryDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    response: Response,
) -> StudyPublic:
    """Queue every variant of the study again at new seeds (``seeds``, none it has run, or
    ``add`` more after its highest), checked and counted as a new study's runs are; the table
    grows as they finish. A search's trials keep the seeds they were given (409)."""
    study = find_study(session, study_id, principal, settings)
    require_owner(principal, study.owner, "add seeds to this study")
    if study.kind == "search":
        raise HTTPException(
            409,
            "A search runs each trial at the seeds it was submitted with; submit a new search "
            "with more seeds, or a study of its best trials.",
        )
    seeds = new_seeds(study.seeds, body.seeds, body.add)  # a SpecError: 422
    # the study as submitted, with all its seeds (what a study of that size would be checked as)
    submitted = StudyCreate.model_validate_json(json.dumps(study.definition)).asked()
    asked = dataclasses.replace(submitted, seeds=[*study.seeds, *seeds])
    check_study_size(asked)
    variants = study_variants(asked)
    runs = plan(variants, seeds)
    for run in runs:
        check_budget(run.spec, settings)
    for name, loc in planned_datasets(asked, variants, runs).items():
        check_available(name, settings.resolved_data_dir, loc)

    def store() -> tuple[Study, list[Experiment]]:
        return studies.add_seeds(session, study, runs=runs, seeds=seeds)

    stored = store_and_publish(
        session, engine, celery, principal, settings, response, adding=len(runs), store=store
    )
    return public(session, engine, stored)
