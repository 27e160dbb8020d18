"""Learning-rate schedules: each epoch's rate is a function of the spec and of the epochs
before it, set on the optimizer as the epoch begins, so a resumed run goes on where it was."""

import math
from collections.abc import Sequence
from typing import Any

import keras

from models.spec import CosineSchedule, ExperimentSpec, PlateauSchedule, StepSchedule


def rate_at(spec: ExperimentSpec, epoch: int, past: Sequence[float | None] = ()) -> float:
    """The learning rate of epoch ``epoch`` (counted from 0); ``past`` holds the monitored
    values of the epochs before it (a plateau schedule's only input besides the spec)."""
    base = spec.optimizer.learning_rate
    schedule = spec.training.lr_schedule
    match schedule:
        case StepSchedule():
            return base * schedule.factor ** (epoch // schedule.every)
        case CosineSchedule():
            warmup = schedule.warmup_epochs
            if epoch < warmup:
                return base * (epoch + 1) / (warmup + 1)
            progress = (epoch - warmup) / (spec.training.epochs - warmup)
            return base * 0.5 * (1 + math.cos(math.pi * progress))
        case PlateauSchedule():
            return base * schedule.factor ** reductions(schedule, past[:epoch])
    return base


def reductions(schedule: PlateauSchedule, values: Sequence[float | None]) -> int:
    """How many times a plateau schedule has cut the rate after these epochs: each time
    ``patience`` epochs in a row (at least one) did not beat the best value so far, as Keras'
    ReduceLROnPlateau counts with no cool-down and no minimum change."""
    higher_is_better = "accuracy" in schedule.monitor
    best: float | None = None
    waited = cuts = 0
    for value in values:
        if value is None:
            continue
        if best is None or (value > best if higher_is_better else value < best):
            best, waited = value, 0
            continue
        waited += 1
        if waited >= schedule.patience:
            cuts, waited = cuts + 1, 0
    return cuts


class ScheduledRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate at each epoch's start from ``rate_at``; ``past``
    holds the recorded epochs' logs of a resumed run."""

    def __init__(self, spec: ExperimentSpec, past: Sequence[dict[str, float | None]]) -> None:
        super().__init__()
        self.spec = spec
        schedule = spec.training.lr_schedule
        self.monitor = schedule.monitor if isinstance(schedule, PlateauSchedule) else None
        self.values = [logs.get(self.monitor) for logs in past] if self.monitor else []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.optimizer.learning_rate = rate_at(self.spec, epoch, self.values)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.monitor is not None:
            value = (logs or {}).get(self.monitor)
            self.values.append(None if value is None else float(value))


def current_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The optimizer's learning rate now, to the 7 significant digits its float32 holds."""
    value = float(optimizer.learning_rate.numpy())
    return float(f"{value:.7g}")
