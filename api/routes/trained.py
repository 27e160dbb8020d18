"""A finished experiment's trained model: the ``.keras`` file to download, and predictions
for uploaded pictures."""

import hashlib
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, File, HTTPException, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError

from api.deps import EngineDep, PrincipalDep, ReleasingRoute, SettingsDep, find_experiment
from api.errors import documented
from api.predictor import Predictor, PredictorGone
from api.schemas import ClassProbability, Prediction
from core.config import Settings
from models.datasets import DATASETS
from models.errors import error_entry
from store.handles import Engine, Session
from store.runs import trained_model
from store.tables import ACTIVE, Experiment
from store.tokens import Principal
from views.images import BadImage, pixels_for

router = APIRouter(
    prefix="/experiments",
    tags=["experiments"],
    responses=documented(400, 401),
    route_class=ReleasingRoute,
)

KERAS_FILE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {}},
        "description": "The .keras archive: architecture, weights and optimizer state.",
    }
}


def _finished_model(
    engine: Engine, experiment_id: str, principal: Principal | None, settings: Settings
) -> tuple[Experiment, int, bytes]:
    """The experiment and its newest checkpoint; 404 or 409 with a sentence otherwise."""
    with Session(engine) as session:
        experiment = find_experiment(session, experiment_id, principal, settings)
    if experiment.status in ACTIVE:
        raise HTTPException(
            409,
            f"Experiment {experiment.id} is {experiment.status}; its model can be had once it "
            "has finished.",
        )
    model = trained_model(engine, experiment.id)
    if model is None:
        raise HTTPException(
            404, f"Experiment {experiment.id} has no trained model: it finished no epoch."
        )
    return experiment, *model


@router.get(
    "/{experiment_id}/model", response_class=Response, responses=KERAS_FILE | documented(404, 409)
)
def download_model(
    experiment_id: str, engine: EngineDep, principal: PrincipalDep, settings: SettingsDep
) -> Response:
    """The trained model of a finished experiment (its last checkpoint), for
    ``keras.models.load_model``."""
    experiment, epoch, data = _finished_model(engine, experiment_id, principal, settings)
    filename = f"convlab-{experiment.id}-epoch{epoch}.keras"
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.post(
    "/{experiment_id}/predict",
    response_model=Prediction,
    responses=documented(404, 409, 413) | {503: {"description": "The prediction process died."}},
)
async def predict(
    experiment_id: str,
    file: Annotated[UploadFile, File(description="A PNG or JPEG picture.")],
    request: Request,
    engine: EngineDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> Prediction:
    """Class probabilities for one picture from a finished experiment's model. The picture is
    converted to the dataset's channels, resized to its shape and scaled as in training; it
    should look like the dataset's (light strokes on dark for MNIST and digits)."""
    experiment, epoch, data = await anyio.to_thread.run_sync(
        _finished_model, engine, experiment_id, principal, settings
    )
    dataset = DATASETS[experiment.spec["dataset"]["name"]]
    try:
        pixels = pixels_for(await file.read(), dataset)
    except BadImage as exc:
        raise RequestValidationError(
            [error_entry(("body", "file"), str(exc), file.filename)]
        ) from None
    predictor: Predictor = request.app.state.predictor
    digest = hashlib.sha256(data).hexdigest()
    try:
        values = await predictor.probabilities(data, digest, pixels, dataset.pixel_max)
    except PredictorGone as exc:
        raise HTTPException(503, str(exc)) from None
    names = dataset.class_names or tuple(str(index) for index in range(dataset.classes))
    ranked = sorted(
        (
            ClassProbability(label=names[index], index=index, probability=value)
            for index, value in enumerate(values)
        ),
        key=lambda item: -item.probability,
    )
    return Prediction(
        experiment_id=experiment.id, epoch=epoch, top=ranked[0].label, probabilities=ranked
    )
