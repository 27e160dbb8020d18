"""One experiment's training run: seed, load data, build, fit, record every epoch."""

import gc
import logging
import math
import os
import time
from typing import Any

import keras
import tensorflow as tf
from celery.exceptions import Reject
from sqlalchemy import Engine

from core.config import get_settings
from core.db import get_engine
from core.runs import EpochMetrics, cancel_requested, claim, finish, record_epoch, release
from core.tables import Status
from models.build import build_model
from models.spec import ExperimentSpec
from worker.datasets import DatasetUnavailable, prepare
from worker.stop import stop_requested

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Someone asked the experiment to stop."""


class Interrupted(Exception):
    """The worker is shutting down; the job goes back to the queue."""


class TrainingDiverged(Exception):
    """The loss stopped being a finite number."""


def reset_seed(seed: int) -> None:
    """The chapter's ``reset_seed`` (hash seed, Python, NumPy, TensorFlow), plus Keras 3's
    global seed generator, which a warm process would otherwise carry from job to job."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)


class EpochRecorder(keras.callbacks.Callback):
    """Writes each finished epoch's row the moment the epoch ends."""

    def __init__(self, engine: Engine, experiment_id: str, learning_rate: float) -> None:
        super().__init__()
        self.engine = engine
        self.experiment_id = experiment_id
        self.learning_rate = learning_rate
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        number = epoch + 1
        if not math.isfinite(logs["loss"]):
            became = "NaN" if math.isnan(logs["loss"]) else "infinite"
            raise TrainingDiverged(
                f"loss became {became} at epoch {number} "
                f"(learning rate {self.learning_rate} too high?)"
            )
        metrics = EpochMetrics(
            epoch=number,
            loss=float(logs["loss"]),
            accuracy=float(logs["accuracy"]),
            val_loss=_finite_or_none(logs.get("val_loss")),
            val_accuracy=_finite_or_none(logs.get("val_accuracy")),
            seconds=time.perf_counter() - self.started,
        )
        record_epoch(self.engine, self.experiment_id, metrics)
        log.info("experiment %s epoch %d: %s", self.experiment_id, number, metrics)


class CancelCheck(keras.callbacks.Callback):
    """Stops training at a batch boundary once the experiment's cancel flag is set."""

    def __init__(self, engine: Engine, experiment_id: str, every_seconds: float) -> None:
        super().__init__()
        self.engine = engine
        self.experiment_id = experiment_id
        self.every_seconds = every_seconds
        self.checked = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._check()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if stop_requested.is_set() or time.monotonic() - self.checked >= self.every_seconds:
            self._check()

    def _check(self) -> None:
        if stop_requested.is_set():
            raise Interrupted
        self.checked = time.monotonic()
        if cancel_requested(self.engine, self.experiment_id):
            raise Cancelled


def fit(spec: ExperimentSpec, callbacks: list[keras.callbacks.Callback]) -> None:
    """Train ``spec`` the chapter's way: seeded, test set as validation unless told otherwise."""
    data = prepare(
        spec.dataset.name,
        get_settings().resolved_data_dir,
        train_size=spec.dataset.train_size,
        test_size=spec.dataset.test_size,
        seed=spec.seed,
    )
    reset_seed(spec.seed)
    model = build_model(spec)
    if spec.training.early_stopping is not None:
        callbacks = [
            *callbacks,
            keras.callbacks.EarlyStopping(**spec.training.early_stopping.model_dump()),
        ]
    validation: dict[str, Any] = (
        {"validation_data": (data.x_test, data.y_test)}
        if spec.training.validation_split is None
        else {"validation_split": spec.training.validation_split}
    )
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=spec.training.batch_size,
        epochs=spec.training.epochs,
        callbacks=callbacks,
        verbose=0,
        **validation,
    )


def run_experiment(experiment_id: str) -> None:
    """Claim, train and close one experiment; every outcome ends in its row.

    A worker that is shutting down hands the message back to the broker instead.
    """
    if stop_requested.is_set():
        raise Reject("worker shutting down", requeue=True)
    engine = get_engine()
    experiment = claim(engine, experiment_id)
    if experiment is None:
        log.info("experiment %s is not queued any more; skipping", experiment_id)
        return
    spec = ExperimentSpec.model_validate(experiment.spec)
    callbacks = [
        CancelCheck(engine, experiment_id, get_settings().cancel_poll_seconds),
        EpochRecorder(engine, experiment_id, spec.optimizer.learning_rate),
    ]
    try:
        fit(spec, callbacks)
    except Cancelled:
        finish(engine, experiment_id, Status.cancelled)
    except Interrupted:
        release(engine, experiment_id)
        log.info("experiment %s interrupted by shutdown; back in the queue", experiment_id)
        raise Reject("worker shutting down", requeue=True) from None
    except (DatasetUnavailable, TrainingDiverged) as exc:
        finish(engine, experiment_id, Status.failed, str(exc))
    except tf.errors.ResourceExhaustedError:
        finish(
            engine,
            experiment_id,
            Status.failed,
            "Ran out of memory while training; lower training.batch_size or the model's size.",
        )
    except Exception as exc:
        log.exception("experiment %s crashed", experiment_id)
        finish(
            engine, experiment_id, Status.failed, f"Training crashed: {type(exc).__name__}: {exc}"
        )
    else:
        finish(engine, experiment_id, Status.succeeded)
    finally:
        keras.backend.clear_session()
        gc.collect()


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
