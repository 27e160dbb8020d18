"""Verifying an experiment: a rerun of its spec that, once it succeeds, is compared with it
epoch by epoch (``jobs.verify``), the verdict recorded on both."""

from fastapi import APIRouter, Depends, Response

from api.deps import (
    CeleryDep,
    EngineDep,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    SettingsDep,
    find_experiment,
    limit_submissions,
)
from api.errors import documented
from api.routes.experiments.records import submit
from api.schemas import ExperimentCreate, ExperimentPublic
from store.verdicts import check_verifiable, mark_verification

router = APIRouter(
    prefix="/experiments",
    tags=["experiments"],
    responses=documented(400, 401),
    route_class=ReleasingRoute,
)


@router.post(
    "/{experiment_id}/verify",
    status_code=201,
    response_model=ExperimentPublic,
    dependencies=[Depends(limit_submissions)],
    responses=documented(404, 409, 429),
)
def verify_experiment(
    experiment_id: str,
    session: SessionDep,
    engine: EngineDep,
    celery: CeleryDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    response: Response,
) -> ExperimentPublic:
    """Rerun a succeeded experiment's spec as a new experiment that verifies it: when the
    rerun succeeds, the verdict (identical, within 1e-6, or diverged at an epoch) is recorded
    on both."""
    original = find_experiment(session, experiment_id, principal, settings)
    check_verifiable(original)
    body = ExperimentCreate.model_validate({"from": original.id, "name": original.name})
    rerun = submit(body, session, engine, celery, principal, settings, response)
    # After the rerun is queued (the submit sequence commits and publishes): a worker that
    # claims it before this commit leaves its verdict to the sweeper.
    mark_verification(session, rerun.id, original.id)
    session.commit()
    rerun.verifies_id = original.id
    return rerun
