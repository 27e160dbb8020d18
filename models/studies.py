"""A study's variants, crossed with its seeds, resolved to full specs before anything is stored."""

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

from models.errors import Loc, SpecError, error_entry
from models.overrides import fold
from models.presets import PRESETS, resolve
from models.spec import ExperimentSpec

CHAPTER = ["base", "sgd", "momentum", "rmsprop", "adam", "dropout", "l2", "early_stopping",
           "batch_norm", "sigmoid", "tanh", "leaky_relu", "prelu"]  # fmt: skip
"""The chapter's thirteen variants, in the chapter's order."""

MAX_EXPERIMENTS = 500
MAX_GRID_KEYS = 8
MAX_GRID_VALUES = 20
"""Values per grid key."""
NAME_CHARS = 200
"""The widest name a run or a variant may have: ``store.tables``' columns for them."""
LABEL_CHARS = NAME_CHARS - len(f", seed {2**31 - 1}")
"""The widest grid label: its runs' names (the label and the seed) fit whole."""
SECTIONS = ("dataset", "model", "optimizer", "training")


@dataclass(frozen=True)
class Variant:
    """One row of a study's table: a label, a preset and overrides over the study's base."""

    name: str
    preset: str
    overrides: dict[str, Any]
    loc: Loc
    """Where the variant was given in the request, for errors."""


@dataclass(frozen=True)
class PlannedRun:
    variant: str
    spec: ExperimentSpec

    @property
    def name(self) -> str:
        """``<variant>, seed <n>``, the variant cut short where needed to keep the seed."""
        return shortened(self.variant, NAME_CHARS, keep=f", seed {self.spec.seed}")


def shortened(text: str, limit: int, *, keep: str = "") -> str:
    """``text`` then ``keep`` in at most ``limit`` characters: ``text`` is cut with an ellipsis
    where both do not fit, ``keep`` always kept whole."""
    if len(text) + len(keep) <= limit:
        return text + keep
    return text[: limit - len(keep) - 1] + "\u2026" + keep


def check_size(counted: str, counts: list[int], seeds: int, loc: Loc) -> None:
    """SpecError at ``loc`` when a study would hold over MAX_EXPERIMENTS runs, computed from the
    counts alone before anything is built: ``counts`` are a grid's numbers of values per key
    (``counted`` "grid"), else one count of ``counted`` (presets, variants, trials)."""
    variants = math.prod(counts)
    runs = variants * seeds
    if runs <= MAX_EXPERIMENTS:
        return
    if counted == "grid":
        message = (
            f"the grid's {' x '.join(str(count) for count in counts)} values make "
            f"{variants:,} variants; x {seeds} seeds that is {runs:,} experiments, and a study "
            f"holds at most {MAX_EXPERIMENTS} (a grid takes 1 to {MAX_GRID_KEYS} keys of 1 to "
            f"{MAX_GRID_VALUES} values each, and their product times the seeds must be at most "
            f"{MAX_EXPERIMENTS})"
        )
    else:
        message = (
            f"{variants} {counted} x {seeds} seeds is {runs} experiments; at most {MAX_EXPERIMENTS}"
        )
    raise SpecError([error_entry(loc, message, None)])


def from_presets(names: list[str], base_overrides: dict[str, Any], loc: Loc) -> list[Variant]:
    return [Variant(name, name, base_overrides, (*loc, index)) for index, name in enumerate(names)]


def from_variants(
    items: list[dict[str, Any]], base_preset: str, base_overrides: dict[str, Any]
) -> list[Variant]:
    variants = []
    for index, item in enumerate(items):
        overrides = {key: value for key, value in item.items() if key in SECTIONS}
        variants.append(
            Variant(
                item["name"],
                item.get("preset") or base_preset,
                fold(base_overrides, overrides),
                ("variants", index),
            )
        )
    return variants


def from_grid(
    grid: dict[str, list[Any]], base_preset: str, base_overrides: dict[str, Any]
) -> list[Variant]:
    """Every combination of the grid's values; keys are ``preset`` or ``section.field``; each
    labelled with its values (a label past LABEL_CHARS cut short, its point's number kept, so
    that labels stay distinct). Its size is checked first (``check_size``)."""
    for key in grid:
        section, _, field = key.partition(".")
        if key != "preset" and (section not in SECTIONS or not field or "." in field):
            raise SpecError(
                [
                    error_entry(
                        ("grid", key),
                        "grid keys are 'preset' or section.field, e.g. optimizer.name",
                        key,
                    )
                ]
            )
    variants = []
    for number, values in enumerate(itertools.product(*grid.values()), start=1):
        chosen = dict(zip(grid, values, strict=True))
        point = {key: value for key, value in chosen.items() if key != "preset"}
        overrides = fold(base_overrides, point)
        label = ", ".join(f"{key}={json.dumps(value)}" for key, value in chosen.items())
        if len(label) > LABEL_CHARS:
            label = shortened(label, LABEL_CHARS, keep=f" (point {number})")
        variants.append(Variant(label, chosen.get("preset", base_preset), overrides, ("grid",)))
    return variants


def plan(variants: list[Variant], seeds: list[int]) -> list[PlannedRun]:
    """Each variant with each seed, resolved; SpecError locating the variant at fault (the
    study's size is checked before its variants are made: ``check_size``)."""
    names = [variant.name for variant in variants]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SpecError(
            [error_entry(("variants",), f"variant names repeat: {duplicates}", duplicates)]
        )
    runs = []
    for variant in variants:
        for seed in seeds:
            try:
                spec = resolve(variant.preset, variant.overrides, {"seed": seed})
            except SpecError as exc:
                raise SpecError([_at(variant, error) for error in exc.errors]) from None
            runs.append(PlannedRun(variant.name, spec))
    return runs


def _at(variant: Variant, error: dict[str, Any]) -> dict[str, Any]:
    """The error located at the variant (a grid names the key whose value failed)."""
    loc = tuple(error["loc"])
    if variant.loc == ("grid",):
        key = (
            ".".join(str(part) for part in loc[:2]) if len(loc) > 1 else str(loc[0]) if loc else ""
        )
        return error | {"loc": ("grid", key), "msg": f"{variant.name}: {error['msg']}"}
    if loc == ("preset",) and variant.preset not in PRESETS and variant.loc[0] == "presets":
        return error | {"loc": variant.loc}
    return error | {"loc": (*variant.loc, *loc)}
