"""The run's best model so far, kept apart from its rolling checkpoints: saved after each
epoch whose monitored value beats the best by more than min_delta, Keras' EarlyStopping rule,
so ``weights=best`` is the model ``restore_best_weights`` restores."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import keras

from models.spec import ExperimentSpec
from store.best_models import best_so_far, save_best
from worker.checkpoints import to_bytes

if TYPE_CHECKING:
    from worker.training import Job


class BestKeeper(keras.callbacks.Callback):
    """Stores ``model`` whenever an epoch beats the best monitored value so far."""

    def __init__(
        self, job: Job, spec: ExperimentSpec, model: keras.Model, initial_epoch: int
    ) -> None:
        super().__init__()
        self.job = job
        self.kept_model = model
        """The model itself (``self.model`` may be a trainer wrapped around it)."""
        self.monitor, self.min_delta = spec.training.monitored()
        self.initial_epoch = initial_epoch
        self.best: float | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        job = self.job
        kept = job.durably(
            "reading its best model", lambda: best_so_far(job.engine, job.experiment_id)
        )
        # One kept after an epoch that a resume trains again is not the best of this history.
        self.best = kept[1] if kept is not None and kept[0] <= self.initial_epoch else None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value) or not self._beats(float(value)):
            return
        self.best = best = float(value)
        data = to_bytes(self.kept_model)
        job = self.job
        job.durably(
            f"keeping epoch {epoch + 1} as its best model",
            lambda: save_best(
                job.engine,
                job.experiment_id,
                epoch=epoch + 1,
                monitor=self.monitor,
                value=best,
                data=data,
            ),
        )

    def _beats(self, value: float) -> bool:
        if self.best is None:
            return True
        if "accuracy" in self.monitor:
            return value - self.min_delta > self.best
        return value + self.min_delta < self.best
