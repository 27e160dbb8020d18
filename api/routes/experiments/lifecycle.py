"""Iterating on an experiment: continue a finished one for more epochs, pause and resume one."""

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response

from api.deps import (
    CeleryDep,
    EngineDep,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    SettingsDep,
    derived_priority,
    find_experiment,
    limit_submissions,
    require_owner,
)
from api.errors import documented
from api.public import experiment_public
from api.schemas import ContinueCreate, ExperimentPublic
from api.submit import store_and_publish
from jobs.queueing import publish
from jobs.retention import removal_note
from models.budget import check_budget
from models.dataset_record import changes_since
from models.datasets import check_available
from models.errors import SpecError, error_entry
from models.presets import resolve_over
from models.spec import MAX_EPOCHS, ExperimentSpec
from store import lifecycle, transitions
from store.runs import trained_model
from store.tables import Experiment

router = APIRouter(
    prefix="/experiments",
    tags=["experiments"],
    responses=documented(400, 401),
    route_class=ReleasingRoute,
)


@router.post(
    "/{experiment_id}/continue",
    status_code=201,
    response_model=ExperimentPublic,
    dependencies=[Depends(limit_submissions)],
    responses=documented(404, 409, 413, 429),
)
def continue_experiment(
    experiment_id: str,
    body: ContinueCreate,
    session: SessionDep,
    engine: EngineDep,
    celery: CeleryDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    response: Response,
) -> ExperimentPublic:
    """Train an ended experiment on from its last checkpoint (weights and optimizer state) as
    a new experiment, whose epochs are numbered after the parent's."""
    parent = find_experiment(session, experiment_id, principal, settings)
    lifecycle.check_continuable(parent)
    checkpoint = trained_model(engine, parent.id)
    if checkpoint is None:
        note = removal_note(parent, settings)
        raise HTTPException(
            409,
            f"Experiment {parent.id} has no checkpoint to continue from: it finished no epoch"
            f"{note}.",
        )
    if changed := changes_since(parent.dataset):  # before the spec, which it may refuse
        name = parent.spec["dataset"]["name"]
        raise HTTPException(
            409,
            f"Dataset {name} changed since experiment {parent.id} was submitted: {changed}; "
            "its model cannot train on other data. Rerun it instead, naming the dataset "
            f'(POST /experiments with "from": "{parent.id}", "dataset": {{"name": "{name}"}}), '
            "to train on the new data from scratch.",
        )
    spec = _continued_spec(parent.spec, after=checkpoint[0], epochs=body.epochs)
    check_available(spec.dataset.name, settings.resolved_data_dir, ("dataset", "name"))
    priority = derived_priority(principal, body.priority, parent.priority)
    check_budget(spec, settings)

    def store() -> tuple[Experiment, list[Experiment]]:
        child = lifecycle.continue_experiment(
            session,
            parent,
            checkpoint,
            spec=spec.model_dump(mode="json"),
            owner=principal.user if principal else None,
            priority=priority,
        )
        return child, [child]

    child = store_and_publish(
        session, engine, celery, principal, settings, response, adding=1, store=store
    )
    return experiment_public(session, settings, child)


@router.post(
    "/{experiment_id}/pause",
    status_code=202,
    response_model=ExperimentPublic,
    responses=documented(403, 404, 409),
)
def pause_experiment(
    experiment_id: str, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> ExperimentPublic:
    """Pause: a queued experiment at once; a running one checkpoints at its next batch and
    frees its worker."""
    experiment = find_experiment(session, experiment_id, principal, settings)
    require_owner(principal, experiment.owner, "pause this experiment")
    return experiment_public(session, settings, transitions.pause(session, experiment))


@router.post(
    "/{experiment_id}/resume",
    status_code=202,
    response_model=ExperimentPublic,
    responses=documented(403, 404, 409),
)
def resume_experiment(
    experiment_id: str,
    session: SessionDep,
    engine: EngineDep,
    celery: CeleryDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> ExperimentPublic:
    """Put a paused experiment back in the queue; it goes on from its checkpoint."""
    experiment = find_experiment(session, experiment_id, principal, settings)
    require_owner(principal, experiment.owner, "resume this experiment")
    transitions.resume(session, experiment)
    publish(engine, celery, experiment.id)  # a miss is left to the sweeper
    return experiment_public(session, settings, experiment)


def _continued_spec(spec: dict[str, Any], *, after: int, epochs: int) -> ExperimentSpec:
    """``spec`` trained to epoch ``after + epochs``; a SpecError (422) past the epoch limit."""
    total = after + epochs
    if total > MAX_EPOCHS:
        raise SpecError(
            [
                error_entry(
                    ("epochs",),
                    f"the parent has trained {after} epochs; at most {MAX_EPOCHS - after} more "
                    f"fit in the limit of {MAX_EPOCHS}",
                    epochs,
                )
            ]
        )
    return resolve_over(spec, {"training": {"epochs": total}})
