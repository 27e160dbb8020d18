"""The run's best model so far, kept apart from its rolling checkpoints: the weights of each
epoch whose monitored value beats the best by more than min_delta (Keras' EarlyStopping rule,
so ``weights=best`` is the model ``restore_best_weights`` restores). They are kept in memory
and stored at the checkpoints' pace (at most every ``CONVLAB_CHECKPOINT_SECONDS``), at the end
of training and when the run is paused or interrupted: a fast GPU, whose every early epoch
improves, does not write a model into the database each fraction of a second."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import keras

from models.spec import ExperimentSpec
from store.best_models import best_so_far
from store.runs import keep_best
from worker.checkpoints import to_bytes
from worker.job import Job

if TYPE_CHECKING:
    import numpy as np


class BestKeeper(keras.callbacks.Callback):
    """Keeps the weights of the best epoch so far and stores them when due."""

    def __init__(self, job: Job, spec: ExperimentSpec) -> None:
        super().__init__()
        self.job = job
        self.monitor, self.min_delta = spec.training.monitored()
        self.kept_model: keras.Model | None = None
        """The model itself (``self.model`` may be a trainer wrapped around it)."""
        self.initial_epoch = 0
        self.best: float | None = None
        self.unstored: tuple[int, list[np.ndarray]] | None = None
        """The best epoch and its weights, when newer than the stored best model."""
        self.stored_at = time.monotonic()

    def watch(self, model: keras.Model, initial_epoch: int) -> None:
        """Keep ``model``'s best weights from the epoch after ``initial_epoch`` on."""
        self.kept_model, self.initial_epoch = model, initial_epoch
        self.stored_at = time.monotonic()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        job = self.job
        kept = job.durably(
            "reading its best model", lambda: best_so_far(job.engine, job.experiment_id)
        )
        # One kept after an epoch that a resume trains again is not the best of this history.
        self.best = kept[1] if kept is not None and kept[0] <= self.initial_epoch else None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        assert self.kept_model is not None, "watch(model) first"
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(value) and self._beats(float(value)):
            self.best = float(value)
            self.unstored = (epoch + 1, self.kept_model.get_weights())
        if time.monotonic() - self.stored_at >= self.job.settings.checkpoint_seconds:
            self.store()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.store()

    def store(self) -> None:
        """Store the best weights if they are newer than the stored best model: the model
        with those weights, saved whole, then given back the weights it had."""
        if self.unstored is None:
            return
        assert self.kept_model is not None and self.best is not None
        epoch, weights = self.unstored
        model, best = self.kept_model, self.best
        reached = model.get_weights()
        model.set_weights(weights)
        try:
            data = to_bytes(model)
        finally:
            model.set_weights(reached)
        job = self.job
        job.durably(
            f"keeping epoch {epoch} as its best model",
            lambda: keep_best(
                job.engine,
                job.experiment_id,
                job.owner,
                epoch=epoch,
                monitor=self.monitor,
                value=best,
                data=data,
            ),
        )
        self.unstored = None
        self.stored_at = time.monotonic()

    def _beats(self, value: float) -> bool:
        if self.best is None:
            return True
        if "accuracy" in self.monitor:
            return value - self.min_delta > self.best
        return value + self.min_delta < self.best
