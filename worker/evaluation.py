"""A finished run's test set, class by class: the confusion matrix and each class's accuracy,
computed once when the run ends well and stored for the API (``GET .../evaluation``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import keras
import numpy as np

from models.build import as_input
from models.dataset_record import DatasetRecord, trained_on
from models.spec import ExperimentSpec
from store.runs import save_evaluation
from store.tables import Evaluation
from worker.datasets import prepare
from worker.job import Job

log = logging.getLogger(__name__)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: int) -> list[list[int]]:
    """Counts of (true class, predicted class) pairs: rows are the true class."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (true.reshape(-1), predicted.reshape(-1)), 1)
    return counts.tolist()


def per_class_accuracy(confusion: list[list[int]]) -> list[float | None]:
    """Each class's share of its test images predicted right; None for a class with none."""
    return [row[index] / sum(row) if sum(row) else None for index, row in enumerate(confusion)]


def evaluate(
    experiment_id: str,
    spec: ExperimentSpec,
    model: keras.Model,
    data_dir: Path,
    record: DatasetRecord | None,
) -> Evaluation:
    """``model``'s predictions on the run's test set (the same seeded subset fit used), with
    the classes of its dataset ``record`` (None: a run from before records were kept)."""
    data = prepare(
        spec.dataset.name,
        data_dir,
        train_size=spec.dataset.train_size,
        test_size=spec.dataset.test_size,
        seed=spec.seed,
        record=record,
    )
    info = trained_on(spec.dataset.name, record)
    scores = model.predict(
        as_input(model, data.x_test, info.pixel_max), batch_size=spec.training.batch_size, verbose=0
    )
    confusion = confusion_matrix(data.y_test, np.argmax(scores, axis=-1), info.classes)
    return Evaluation(
        experiment_id=experiment_id,
        weights="best" if spec.training.restores_best() else "last",
        classes=list(info.labels()),
        # null for a class without test images: the column is JSON, its annotation too narrow
        per_class_accuracy=cast("list[float]", per_class_accuracy(confusion)),
        confusion=confusion,
    )


def record_evaluation(job: Job, spec: ExperimentSpec, model: keras.Model | None) -> None:
    """Evaluate the trained ``model`` (None: fit watched none) and store the result; a run
    whose evaluation fails still succeeds (the failure is logged), one whose database is away
    waits for it."""
    if model is None:
        return
    try:
        data_dir = job.settings.resolved_data_dir
        evaluation = evaluate(job.experiment_id, spec, model, data_dir, job.dataset)
    except Exception:
        log.exception("experiment %s: could not evaluate its test set", job.experiment_id)
        return
    job.durably(
        "recording its evaluation", lambda: save_evaluation(job.engine, evaluation, job.owner)
    )
