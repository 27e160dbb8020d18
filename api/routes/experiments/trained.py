"""A finished experiment's trained model: the ``.keras`` file to download, and predictions
for uploaded pictures."""

import hashlib
from typing import Annotated, Any, Literal

import anyio
import numpy as np
from fastapi import APIRouter, File, HTTPException, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError

from api.deps import EngineDep, PrincipalDep, ReleasingRoute, SettingsDep, find_experiment
from api.errors import documented
from api.limits import PredictionSlots, requester
from api.predictor import Predictor, PredictorGone
from api.schemas import ClassProbability, Prediction
from core.config import Settings
from jobs.retention import removal_note
from models.dataset_record import trained_on
from models.datasets import DatasetInfo
from models.errors import error_entry
from models.spec import TrainingSpec
from models.status import ACTIVE
from store.best_models import best_model
from store.db import Engine, session_scope
from store.runs import trained_model
from store.tables import Experiment
from store.tokens import Principal
from views.images import BadImage, TooManyPixels, pixels_for

router = APIRouter(
    prefix="/experiments",
    tags=["experiments"],
    responses=documented(400, 401),
    route_class=ReleasingRoute,
)

Weights = Literal["last", "best"]
WeightsQuery = Annotated[
    Weights | None,
    Query(
        description="last: the newest checkpoint; best: the epoch with the best monitored value "
        "(early stopping's monitor, else val_loss). Default: best with restore_best_weights, "
        "else last."
    ),
]
KERAS_FILE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {}},
        "description": "The .keras archive: architecture, weights and optimizer state.",
    }
}


def _finished_model(
    engine: Engine,
    experiment_id: str,
    principal: Principal | None,
    settings: Settings,
    weights: Weights | None,
) -> tuple[Experiment, int, bytes]:
    """The experiment and its chosen model (by default its best with restore_best_weights,
    else its newest checkpoint); 404 or 409 with a sentence otherwise."""
    with session_scope(engine) as session:
        experiment = find_experiment(session, experiment_id, principal, settings)
    if experiment.status in ACTIVE:
        raise HTTPException(
            409,
            f"Experiment {experiment.id} is {experiment.status}; its model can be had once it "
            "has finished.",
        )
    training = TrainingSpec.model_validate(experiment.spec["training"])  # not today's dataset
    if (weights or ("best" if training.restores_best() else "last")) == "best":
        model = best_model(engine, experiment.id)
        missing = "no best model kept: it finished no epoch, or ran before they were kept"
    else:
        model = trained_model(engine, experiment.id)
        missing = "no trained model: it finished no epoch"
    if model is None:
        note = removal_note(experiment, settings)
        raise HTTPException(404, f"Experiment {experiment.id} has {missing}{note}.")
    return experiment, *model


@router.get(
    "/{experiment_id}/model", response_class=Response, responses=KERAS_FILE | documented(404, 409)
)
def download_model(
    experiment_id: str,
    engine: EngineDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    weights: WeightsQuery = None,
) -> Response:
    """The trained model of a finished experiment (its last checkpoint, or its best epoch's),
    for ``keras.models.load_model``."""
    experiment, epoch, data = _finished_model(engine, experiment_id, principal, settings, weights)
    filename = f"convlab-{experiment.id}-epoch{epoch}.keras"
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


PREDICTION_ERRORS = documented(
    404,
    409,
    413,
    429,
    reasons={
        413: "The request body is over the server's size limit, or the picture has more "
        "pixels than it decodes (CONVLAB_MAX_UPLOAD_PIXELS).",
        429: "The user has as many predictions running as allowed "
        "(CONVLAB_MAX_PREDICTIONS_PER_USER).",
    },
) | {503: {"description": "The prediction process died."}}


@router.post("/{experiment_id}/predict", response_model=Prediction, responses=PREDICTION_ERRORS)
async def predict(
    experiment_id: str,
    file: Annotated[UploadFile, File(description="A PNG or JPEG picture.")],
    request: Request,
    engine: EngineDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    weights: WeightsQuery = None,
) -> Prediction:
    """Class probabilities for one picture from a finished experiment's model. The picture is
    converted to the channels of the data it trained on, resized to its shape and scaled as in
    training (as the experiment's dataset record says, whatever its dataset's name holds now);
    it should look like the dataset's (light strokes on dark for MNIST and digits)."""
    slots: PredictionSlots = request.app.state.prediction_slots
    async with slots.slot(requester(principal, request)):
        experiment, epoch, data = await anyio.to_thread.run_sync(
            _finished_model, engine, experiment_id, principal, settings, weights
        )
        dataset = trained_on(experiment.spec["dataset"]["name"], experiment.dataset)
        pixels = await _pixels(file, dataset, settings.max_upload_pixels)
        predictor: Predictor = request.app.state.predictor
        digest = hashlib.sha256(data).hexdigest()
        try:
            values = await predictor.probabilities(data, digest, pixels, dataset.pixel_max)
        except PredictorGone as exc:
            raise HTTPException(503, str(exc)) from None
    names = dataset.labels()
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


async def _pixels(file: UploadFile, dataset: DatasetInfo, max_pixels: int) -> np.ndarray:
    """The upload as the model's input, decoded in a worker thread; 422 for what is not a
    PNG or JPEG, 413 for a picture over ``max_pixels``."""
    data = await file.read()
    try:
        return await anyio.to_thread.run_sync(pixels_for, data, dataset, max_pixels)
    except BadImage as exc:
        raise RequestValidationError(
            [error_entry(("body", "file"), str(exc), file.filename)]
        ) from None
    except TooManyPixels as exc:
        raise HTTPException(413, str(exc)) from None
