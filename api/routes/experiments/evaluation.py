"""A finished run's test set, class by class: per-class accuracy and the confusion matrix, as
JSON or drawn."""

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel

from api.deps import PrincipalDep, ReleasingRoute, SessionDep, SettingsDep, find_experiment
from api.errors import documented
from api.plot_images import IMAGE, FormatPath
from core.config import Settings
from models.status import Status
from store.db import Session
from store.evaluations import evaluation_of
from store.tables import Evaluation, Experiment
from store.tokens import Principal
from views import plots

router = APIRouter(
    prefix="/experiments",
    tags=["evaluation"],
    responses=documented(400, 401, 404),
    route_class=ReleasingRoute,
)


class EvaluationPublic(BaseModel):
    classes: list[str]
    per_class_accuracy: list[float | None]
    """Each class's share of its test images predicted right (null: no test image of it)."""
    confusion: list[list[int]]
    """Rows: the true class; columns: the predicted one."""
    weights: Literal["best", "last"]
    """The weights evaluated: early stopping's restored best, or the last epoch's."""


@router.get("/{experiment_id}/evaluation", response_model=EvaluationPublic)
def read_evaluation(
    experiment_id: str, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> EvaluationPublic:
    """The test set's per-class accuracy and confusion matrix; 404 until the run has
    succeeded (a failed or cancelled run has none)."""
    _, evaluation = _find(session, experiment_id, principal, settings)
    return EvaluationPublic.model_validate(evaluation, from_attributes=True)


DRAWN: dict[int | str, dict[str, Any]] = {
    200: {"content": IMAGE[200]["content"], "description": "The matrix as an image."}
}
"""Drawn on each request: no ETag, so never a 304 (unlike the curves)."""


@router.get("/{experiment_id}/evaluation.{fmt}", response_class=Response, responses=DRAWN)
def evaluation_plot(
    experiment_id: str,
    fmt: FormatPath,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> Response:
    """The confusion matrix drawn: colours normalized per true class, counts in the cells."""
    experiment, evaluation = _find(session, experiment_id, principal, settings)
    confusion = evaluation.confusion
    right = sum(row[index] for index, row in enumerate(confusion))
    title = (
        f"{experiment.name or experiment.id}: test set, {evaluation.weights} weights, "
        f"{right} of {sum(map(sum, confusion))} right"
    )
    content = plots.confusion_plot(title, evaluation.classes, confusion, fmt)
    return Response(content, media_type=plots.MEDIA_TYPES[fmt])


def _find(
    session: Session, experiment_id: str, principal: Principal | None, settings: Settings
) -> tuple[Experiment, Evaluation]:
    experiment = find_experiment(session, experiment_id, principal, settings)
    evaluation = evaluation_of(session, experiment_id=experiment.id)
    if evaluation is None:
        raise HTTPException(404, _why_none(experiment))
    return experiment, evaluation


def _why_none(experiment: Experiment) -> str:
    """Why a run has no evaluation: not succeeded (yet), or its evaluation failed (a run's
    evaluation is stored before it is marked succeeded)."""
    if experiment.status != Status.succeeded:
        return (
            f"Experiment {experiment.id} is {experiment.status}: its test set is evaluated once, "
            "when its run succeeds."
        )
    return (
        f"Experiment {experiment.id} succeeded but its test set could not be evaluated (the "
        "worker's log says why, e.g. its dataset is no longer on that machine)."
    )
