"""A search's trials as specs: the spec at a point of the space, why one is not run, and the
checks of a space before a search is stored (no Optuna, no database)."""

from typing import Any

from models.budget import Limits, check_budget
from models.errors import SpecError, error_entry
from models.overrides import fold
from models.presets import applied, resolve
from models.search import LENIENT, RUNG_PRUNERS, USES, CategoricalParam, Pruner, SearchSpec
from models.spec import ExperimentSpec
from models.studies import SECTIONS


def base_of(definition: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A search study's preset and the spec keys every trial starts from."""
    return definition.get("preset", "base"), {
        key: definition[key] for key in SECTIONS if definition.get(key) is not None
    }


def trial_spec(
    preset: str, base: dict[str, Any], params: dict[str, Any], seed: int
) -> ExperimentSpec:
    """The spec of the trial at the point ``params``; SpecError naming the point, located at
    the searched field at fault (at the space when the fault is in another field)."""
    try:
        return resolve(preset, base, params, {"seed": seed})
    except SpecError as exc:
        error = exc.errors[0]
        key = _blamed(params, tuple(error["loc"]))
        loc = ("search", "space", key) if key is not None else ("search", "space")
        field = ".".join(map(str, error["loc"]))
        message = ": ".join(part for part in (_point(params), field, error["msg"]) if part)
        raise SpecError([error_entry(loc, message, error["input"])]) from None


def spec_or_refusal(
    definition: dict[str, Any], params: dict[str, Any], seed: int, limits: Limits
) -> tuple[dict[str, Any], str | None]:
    """The spec of a trial's run with ``seed`` as stored, and why it is not run (None: it
    runs). A spec refused is stored as asked: the study's resolved base with the point's values
    merged over it."""
    preset, base = base_of(definition)
    try:
        spec = trial_spec(preset, base, params, seed)
    except SpecError as exc:
        asked = resolve(preset, base, {"seed": seed}).model_dump(mode="json")
        return applied(asked, fold(params)), f"not run: {exc.errors[0]['msg']}"
    try:
        check_budget(spec, limits)
    except SpecError as exc:
        return spec.model_dump(mode="json"), f"not run: {exc.errors[0]['msg']}"
    return spec.model_dump(mode="json"), None


def validate_space(
    study_preset: str, base: dict[str, Any], search: SearchSpec, seed: int, limits: Limits
) -> None:
    """Every searched field exists and accepts the ends of its range and every choice, each
    within the model budget, and the spec accepts every point of a grid; SpecError naming
    ``search.space.<key>`` otherwise. (A sampled point the spec refuses fails its trial.)"""
    for key, param in search.space.items():
        section, *fields = key.split(".")
        if section not in SECTIONS or not 1 <= len(fields) <= 2 or not all(fields):
            message = (
                "keys are section.field or section.field.key, "
                "e.g. model.dropout or training.lr_schedule.type"
            )
            raise SpecError([error_entry(("search", "space", key), message, key)])
        values = param.choices if isinstance(param, CategoricalParam) else [param.low, param.high]
        for value in values:
            spec = trial_spec(study_preset, base, {key: value}, seed)
            try:
                check_budget(spec, limits)
            except SpecError as exc:
                message = f"{_point({key: value})}: {exc.errors[0]['msg']}"
                raise SpecError([error_entry(("search", "space", key), message, value)]) from None
    if search.sampler == "grid":
        for point in search.grid():
            trial_spec(study_preset, base, point, seed)
    check_pruner(search.pruner, most_epochs(study_preset, base, search))


def most_epochs(preset: str, base: dict[str, Any], search: SearchSpec) -> int:
    """The most epochs a trial of the search trains: the base's, or the searched
    ``training.epochs``' highest."""
    searched = search.space.get("training.epochs")
    if searched is None:
        return resolve(preset, base).training.epochs
    if isinstance(searched, CategoricalParam):
        return max(int(choice) for choice in searched.choices)
    return int(searched.high)


def check_pruner(pruner: Pruner, epochs: int) -> None:
    """The pruner takes every field given for it, and its rungs fall within the trials'
    ``epochs``; SpecError naming ``search.pruner.<field>`` otherwise."""
    found = _pruner_fault(pruner, epochs)
    if found is not None:
        field, message = found
        loc = ("search", "pruner", field)
        raise SpecError([error_entry(loc, message, getattr(pruner, field))])


def _pruner_fault(pruner: Pruner, epochs: int) -> tuple[str, str] | None:
    """The first field of the pruner at fault, and why; None when there is none."""
    lenient = LENIENT if pruner.type in ("median", "percentile", "none") else frozenset()
    unused = sorted(pruner.model_fields_set - {"type"} - USES[pruner.type] - lenient)
    if unused:
        takes = ", ".join(sorted(USES[pruner.type])) or "no other field"
        return unused[0], f"the {pruner.type} pruner does not take {unused[0]}; it takes {takes}"
    highest = pruner.max_resource
    if pruner.type == "hyperband" and highest is not None:
        if highest < pruner.min_resource:
            return (
                "max_resource",
                f"max_resource {highest} is below min_resource {pruner.min_resource}",
            )
        if highest > epochs:
            return (
                "max_resource",
                f"max_resource is {highest} epochs; the trials train at most {epochs}",
            )
    first = pruner.first_rung()
    if pruner.type in RUNG_PRUNERS and first > epochs:
        field = "min_resource" if first == pruner.min_resource else "min_early_stopping_rate"
        message = (
            f"the pruner's first rung is at epoch {first}, but the trials train at most "
            f"{epochs} epochs, so it would never prune"
        )
        return field, message
    return None


def trial_label(params: dict[str, Any]) -> str:
    """A trial's point as its runs' names show it, e.g. ``model.dropout=0.25``."""
    return ", ".join(f"{key}={_short(value)}" for key, value in params.items())[:150]


def value_at(spec: dict[str, Any], key: str) -> Any:
    """The value of a dotted searched key in a stored spec (None where it is missing)."""
    value: Any = spec
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _blamed(params: dict[str, Any], loc: tuple[str | int, ...]) -> str | None:
    """The searched key an error at ``loc`` is about: one that names the same field, or a
    field inside it, or the object holding it."""
    path = tuple(map(str, loc))
    for key in params:
        parts = tuple(key.split("."))
        if parts[: len(path)] == path[: len(parts)]:
            return key
    return None


def _point(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in params.items())


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
