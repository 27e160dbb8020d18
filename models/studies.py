"""A study's variants, crossed with its seeds, resolved to full specs before anything is stored."""

import itertools
import json
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
    """Every combination of the grid's values; keys are ``preset`` or ``section.field``."""
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
    for values in itertools.product(*grid.values()):
        chosen = dict(zip(grid, values, strict=True))
        point = {key: value for key, value in chosen.items() if key != "preset"}
        overrides = fold(base_overrides, point)
        label = ", ".join(f"{key}={json.dumps(value)}" for key, value in chosen.items())
        variants.append(Variant(label, chosen.get("preset", base_preset), overrides, ("grid",)))
    return variants


def plan(variants: list[Variant], seeds: list[int]) -> list[PlannedRun]:
    """Each variant with each seed, resolved; SpecError locating the variant at fault."""
    if len(variants) * len(seeds) > MAX_EXPERIMENTS:
        raise SpecError(
            [
                error_entry(
                    (),
                    f"{len(variants)} variants x {len(seeds)} seeds is "
                    f"{len(variants) * len(seeds)} experiments; at most {MAX_EXPERIMENTS}",
                    None,
                )
            ]
        )
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
