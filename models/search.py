"""An Optuna search over spec fields: the space, the sampler and the pruner, each bounded."""

import itertools
import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from models.spec import StrictModel

Choice = str | int | float | bool

MAX_GRID_POINTS = 10_000
"""Every point of a grid is checked before the search is stored."""


class FloatParam(StrictModel):
    type: Literal["float"]
    low: float
    high: float
    log: bool = Field(False, description="Sample uniformly in log space (low must be > 0).")

    @model_validator(mode="after")
    def _range(self) -> "FloatParam":
        _check_range(self.low, self.high, self.log)
        return self


class IntParam(StrictModel):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> "IntParam":
        _check_range(self.low, self.high, self.log)
        return self


class CategoricalParam(StrictModel):
    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1, max_length=50)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class Pruner(StrictModel):
    """Stops trials whose metric at an epoch is worse than the others' at that epoch."""

    type: Literal["median", "percentile", "none"] = "median"
    percentile: float = Field(50.0, gt=0, lt=100, description="For type percentile.")
    n_startup_trials: int = Field(3, ge=0, le=1000, description="Trials never pruned at first.")
    n_warmup_steps: int = Field(1, ge=0, le=1000, description="Epochs never pruned at first.")


class SearchSpec(StrictModel):
    space: dict[str, Param] = Field(
        min_length=1,
        max_length=20,
        description='Spec fields to search, e.g. {"optimizer.learning_rate": {"type": "float", '
        '"low": 1e-5, "high": 0.1, "log": true}}.',
    )
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    n_trials: int = Field(ge=1, le=200)
    parallel: int = Field(1, ge=1, le=16, description="How many trials run at once.")
    metric: Literal["val_accuracy", "val_loss"] = Field(
        "val_accuracy", description="Maximized (accuracy) or minimized (loss); best epoch counts."
    )
    pruner: Pruner = Pruner()

    @model_validator(mode="after")
    def _grid_needs_choices(self) -> "SearchSpec":
        if self.sampler != "grid":
            return self
        if not all(isinstance(param, CategoricalParam) for param in self.space.values()):
            raise ValueError("the grid sampler needs every parameter to be categorical")
        points = math.prod(len(choices) for choices in self.choices().values())
        if points > MAX_GRID_POINTS:
            raise ValueError(f"the grid has {points:,} points; at most {MAX_GRID_POINTS:,}")
        return self

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.metric == "val_accuracy" else "minimize"

    def choices(self) -> dict[str, list[Choice]]:
        """The categorical parameters' choices (the grid sampler's whole space)."""
        return {
            key: param.choices
            for key, param in self.space.items()
            if isinstance(param, CategoricalParam)
        }

    def grid(self) -> list[dict[str, Choice]]:
        """Every point of the grid sampler's space, each as ``{key: choice}``."""
        choices = self.choices()
        return [
            dict(zip(choices, point, strict=True)) for point in itertools.product(*choices.values())
        ]


def _check_range(low: float, high: float, log: bool) -> None:
    if not low < high:
        raise ValueError("low must be less than high")
    if log and low <= 0:
        raise ValueError("a log-scaled range needs low > 0")
