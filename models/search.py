"""An Optuna search over spec fields: the space, the sampler and the pruner, each bounded."""

import itertools
import math
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from models.spec import MAX_EPOCHS, StrictModel

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


PrunerType = Literal["median", "percentile", "successive_halving", "hyperband", "none"]

RUNG_PRUNERS = ("successive_halving", "hyperband")
"""Pruners that keep the best trials at rungs: epochs min_resource x reduction_factor^k."""

USES: dict[str, frozenset[str]] = {
    "median": frozenset({"n_startup_trials", "n_warmup_steps"}),
    "percentile": frozenset({"percentile", "n_startup_trials", "n_warmup_steps"}),
    "successive_halving": frozenset(
        {"min_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count"}
    ),
    "hyperband": frozenset({"min_resource", "max_resource", "reduction_factor", "bootstrap_count"}),
    "none": frozenset(),
}
"""The fields each pruner type takes (besides ``type``)."""

LENIENT = frozenset({"percentile", "n_startup_trials", "n_warmup_steps"})
"""Fields that median, percentile and none have always accepted (and ignored where unused)."""


class Pruner(StrictModel):
    """Stops trials early. median and percentile compare a trial's metric at an epoch with the
    other trials' at that epoch; successive_halving and hyperband let only the best
    1/reduction_factor of the trials reaching a rung (an epoch) train on."""

    type: PrunerType = "median"
    percentile: float = Field(50.0, gt=0, lt=100, description="For type percentile.")
    n_startup_trials: int = Field(3, ge=0, le=1000, description="Trials never pruned at first.")
    n_warmup_steps: int = Field(1, ge=0, le=1000, description="Epochs never pruned at first.")
    min_resource: int = Field(
        1,
        ge=1,
        le=MAX_EPOCHS,
        description="successive_halving and hyperband: the epoch of the first rung.",
    )
    max_resource: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="hyperband: the epochs of a trial that is never pruned (default: the "
        "most epochs a trial trains).",
    )
    reduction_factor: int | None = Field(
        None,
        ge=2,
        le=100,
        description="successive_halving (default 4) and hyperband (default 3): one trial in "
        "reduction_factor goes on at each rung, and rungs are reduction_factor times apart.",
    )
    min_early_stopping_rate: int = Field(
        0,
        ge=0,
        le=20,
        description="successive_halving: the first rung is at min_resource x "
        "reduction_factor^min_early_stopping_rate epochs.",
    )
    bootstrap_count: int = Field(
        0,
        ge=0,
        le=1000,
        description="successive_halving and hyperband: trials a rung needs before any goes on "
        "(the first ones to reach it are pruned).",
    )

    @property
    def reduction(self) -> int:
        """The reduction factor, Optuna's default for the type where none is given."""
        if self.reduction_factor is not None:
            return self.reduction_factor
        return 4 if self.type == "successive_halving" else 3

    def first_rung(self) -> int:
        """The epoch at which a successive_halving or hyperband pruner first judges a trial."""
        rate = self.min_early_stopping_rate if self.type == "successive_halving" else 0
        return int(self.min_resource * self.reduction**rate)


class SearchSpec(StrictModel):
    space: dict[str, Param] = Field(
        min_length=1,
        max_length=20,
        description='Spec fields to search, e.g. {"optimizer.learning_rate": {"type": "float", '
        '"low": 1e-5, "high": 0.1, "log": true}}.',
    )
    sampler: Literal["tpe", "random", "grid", "cmaes", "qmc"] = Field(
        "tpe",
        description="tpe, random, grid (categorical parameters only), cmaes (CMA-ES over the "
        "float and int parameters; categorical ones are drawn at random) or qmc (a scrambled "
        "Sobol sequence).",
    )
    n_trials: int = Field(ge=1, le=200)
    parallel: int = Field(1, ge=1, le=16, description="How many trials run at once.")
    metric: Literal["val_accuracy", "val_loss"] = Field(
        "val_accuracy", description="Maximized (accuracy) or minimized (loss); best epoch counts."
    )
    pruner: Pruner = Pruner()

    @field_validator("sampler")
    @classmethod
    def _cmaes_needs_numbers(cls, sampler: str, info: ValidationInfo) -> str:
        space = info.data.get("space")
        if (
            sampler == "cmaes"
            and space
            and all(isinstance(p, CategoricalParam) for p in space.values())
        ):
            raise ValueError(
                "the cmaes sampler searches float and int parameters, and this space has none; "
                "use tpe, random or grid"
            )
        return sampler

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
