"""A study's variants, crossed with its seeds, resolved to full specs before anything is stored."""

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

from models.errors import Loc, SpecError, error_entry
from models.overrides import fold
from models.presets import PRESETS, resolve
from models.search import CategoricalParam, SearchSpec
from models.spec import ExperimentSpec

CHAPTER = ["base", "sgd", "momentum", "rmsprop", "adam", "dropout", "l2", "early_stopping",
           "batch_norm", "sigmoid", "tanh", "leaky_relu", "prelu"]  # fmt: skip
"""The chapter's thirteen variants, in the chapter's order."""

MAX_EXPERIMENTS = 500
MAX_SEEDS = 20
"""Seeds one study runs its variants at, those added later included."""
LAST_SEED = 2**31 - 1
MAX_GRID_KEYS = 8
MAX_GRID_VALUES = 20
"""Values per grid key."""
NAME_CHARS = 200
"""The widest name a run or a variant may have: ``store.tables``' columns for them."""
LABEL_CHARS = NAME_CHARS - len(f", seed {2**31 - 1}")
"""The widest grid label: its runs' names (the label and the seed) fit whole."""
SECTIONS = ("dataset", "model", "optimizer", "training", "resources")


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


def new_seeds(ran: list[int], seeds: list[int] | None, add: int | None) -> list[int]:
    """The seeds a study that ``ran`` these runs at next: ``seeds`` (SpecError naming those it
    ran already), or the ``add`` integers above its highest; at most MAX_SEEDS in all."""
    if seeds is not None:
        again = [seed for seed in seeds if seed in ran]
        if again:
            message = (
                f"the study has run seeds {again} already (its seeds: {ran}); give only new ones"
            )
            raise SpecError([error_entry(("seeds",), message, again)])
        chosen, loc = seeds, ("seeds",)
    else:
        chosen, loc = list(range(max(ran) + 1, max(ran) + 1 + (add or 0))), ("add",)
        if chosen and chosen[-1] > LAST_SEED:
            message = f"no {add} seeds follow {max(ran)} (seeds end at {LAST_SEED}); give seeds"
            raise SpecError([error_entry(loc, message, add)])
    if len(ran) + len(chosen) > MAX_SEEDS:
        message = (
            f"a study runs at most {MAX_SEEDS} seeds; this one has {len(ran)}, so at most "
            f"{MAX_SEEDS - len(ran)} more"
        )
        raise SpecError([error_entry(loc, message, seeds if seeds is not None else add)])
    return chosen


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


@dataclass(frozen=True)
class StudyAsked:
    """What a study's submission asks for: the preset and spec keys every run starts from, its
    seeds, and what varies (its ``kind``: template, presets, variants, grid or search)."""

    kind: str
    preset: str
    base: dict[str, Any]
    seeds: list[int]
    presets: list[str] | None = None
    variants: list[dict[str, Any]] | None = None
    """Each variant's keys as given (its name, maybe a preset, spec keys)."""
    grid: dict[str, list[Any]] | None = None
    search: SearchSpec | None = None


BASE_DATASET: Loc = ("dataset", "name")


def checked_base(asked: StudyAsked) -> dict[str, Any]:
    """The spec keys every experiment of the study starts from, checked to resolve (its
    errors name body fields)."""
    resolve(asked.preset, asked.base)
    return asked.base


def check_study_size(asked: StudyAsked) -> None:
    """The study's runs counted from the request alone, before any variant is made: at most
    MAX_EXPERIMENTS (a search: its trials, each once per seed)."""
    seeds = len(asked.seeds)
    match asked.kind:
        case "search":
            assert asked.search is not None
            check_size("trials", [asked.search.n_trials], seeds, ("search", "n_trials"))
        case "grid":
            grid = asked.grid or {}
            check_size("grid", [len(values) for values in grid.values()], seeds, ("grid",))
        case "template":
            check_size("variants", [len(CHAPTER)], seeds, ("template",))
        case kind:
            check_size("variants", [len(getattr(asked, kind) or [])], seeds, (kind,))


def study_variants(asked: StudyAsked) -> list[Variant]:
    """The study's rows, resolved from the request (not for a search)."""
    base = checked_base(asked)
    match asked.kind:
        case "template":
            return from_presets(CHAPTER, base, ("template",))
        case "presets":
            return from_presets(asked.presets or [], base, ("presets",))
        case "variants":
            return from_variants(asked.variants or [], asked.preset, base)
        case "grid":
            return from_grid(asked.grid or {}, asked.preset, base)
    raise AssertionError(f"unhandled study kind {asked.kind}")


def planned_datasets(
    asked: StudyAsked, variants: list[Variant], runs: list[PlannedRun]
) -> dict[str, Loc]:
    """Each dataset the runs train on, located at the field that chose it: the base's, or
    the first variant (or grid key) that names another."""
    base = _base_dataset(asked)
    located = {variant.name: variant.loc for variant in variants}
    used: dict[str, Loc] = {}
    for run in runs:
        name = run.spec.dataset.name
        loc = located[run.variant]
        where = ("grid", "dataset.name") if loc == ("grid",) else (*loc, *BASE_DATASET)
        used.setdefault(name, BASE_DATASET if name == base else where)
    return used


def searched_datasets(asked: StudyAsked, search: SearchSpec) -> dict[str, Loc]:
    """Each dataset a search's trials may train on: the searched choices, else the base's."""
    searched = search.space.get("dataset.name")
    if isinstance(searched, CategoricalParam):
        return {str(choice): ("search", "space", "dataset.name") for choice in searched.choices}
    return {_base_dataset(asked): BASE_DATASET}


def _base_dataset(asked: StudyAsked) -> str:
    """The dataset of the study's base spec (its preset with the request's keys)."""
    return resolve(asked.preset, asked.base).dataset.name
