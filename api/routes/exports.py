"""Exports for the ecosystem's own viewers: a study's or an experiment's runs as a TensorBoard
log directory (scalars per epoch, hyperparameters for the HParams tab)."""

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response

from api.deps import (
    AMBIGUOUS,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    SettingsDep,
    find_experiment,
    find_study,
)
from api.errors import documented
from store.studies import study_experiments
from views import tensorboard

router = APIRouter(
    tags=["exports"],
    responses=documented(400, 401, 404, 409, reasons=AMBIGUOUS),
    route_class=ReleasingRoute,
)

ARCHIVE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {tensorboard.MEDIA_TYPE: {}},
        "description": "A .tar.gz of one folder: `tensorboard --logdir` it once extracted.",
    }
}


@router.get("/studies/{study_id}/tensorboard", response_class=Response, responses=ARCHIVE)
def study_tensorboard(
    study_id: str, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> Response:
    """Every experiment of the study as a TensorBoard run: each epoch's loss, accuracy,
    val_loss, val_accuracy (and learning_rate where recorded) as scalars, its spec as the
    HParams tab's hyperparameters."""
    study = find_study(session, study_id, principal, settings)
    runs = tensorboard.runs(session, study_experiments(session, study.id))
    return _archive(f"convlab-study-{study.id}", runs, study.created_at)


@router.get("/experiments/{experiment_id}/tensorboard", response_class=Response, responses=ARCHIVE)
def experiment_tensorboard(
    experiment_id: str, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> Response:
    """One experiment as a TensorBoard run, as in its study's export."""
    experiment = find_experiment(session, experiment_id, principal, settings)
    runs = tensorboard.runs(session, [experiment])
    return _archive(f"convlab-experiment-{experiment.id}", runs, experiment.created_at)


def _archive(folder: str, runs: list[tensorboard.Run], created: datetime) -> Response:
    content = tensorboard.archive(runs, folder, created)
    disposition = f'attachment; filename="{folder}-tensorboard.tar.gz"'
    return Response(
        content, media_type=tensorboard.MEDIA_TYPE, headers={"Content-Disposition": disposition}
    )
