"""The chapter's variants as presets, and how a request's overrides merge over one."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from models.errors import Loc, SpecError, did_you_mean, error_entry
from models.overrides import fold
from models.spec import (
    CROSS_FIELD_ERRORS,
    OPTIMIZER_NAMES,
    SCHEDULE_TYPES,
    ExperimentSpec,
    fields_at,
)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    overrides: dict[str, Any]
    """Differences from the base network, in the same shape as a request body."""

    @property
    def spec(self) -> ExperimentSpec:
        return ExperimentSpec.model_validate({**self.overrides, "preset": self.name})


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "base", "The chapter's base CNN: 3 Conv2D/MaxPool blocks, Dense(128), Adam 1e-3.", {}
        ),
        Preset("sgd", "Plain SGD, learning rate 1e-2.", {"optimizer": {"name": "sgd"}}),
        Preset(
            "momentum",
            "SGD with momentum 0.9, learning rate 1e-2.",
            {"optimizer": {"name": "momentum", "learning_rate": 0.01, "momentum": 0.9}},
        ),
        Preset(
            "rmsprop",
            "RMSprop, learning rate 1e-3, rho 0.9, epsilon 1e-8.",
            {"optimizer": {"name": "rmsprop", "learning_rate": 0.001, "rho": 0.9, "epsilon": 1e-8}},
        ),
        Preset(
            "adam",
            "Adam with explicit beta_1 0.9, beta_2 0.999, epsilon 1e-8.",
            {
                "optimizer": {
                    "name": "adam",
                    "learning_rate": 0.001,
                    "beta_1": 0.9,
                    "beta_2": 0.999,
                    "epsilon": 1e-8,
                }
            },
        ),
        Preset(
            "dropout", "Dropout(0.5) between Flatten and Dense(128).", {"model": {"dropout": 0.5}}
        ),
        Preset(
            "l2", "L2 regularization 1e-2 on the three Conv2D kernels.", {"model": {"l2": 0.01}}
        ),
        Preset(
            "early_stopping",
            "EarlyStopping on val_loss with patience 3.",
            {"training": {"early_stopping": {"monitor": "val_loss", "patience": 3}}},
        ),
        Preset(
            "batch_norm",
            "BatchNormalization after each Conv2D's ReLU, before its MaxPooling2D.",
            {"model": {"batch_norm": True}},
        ),
        Preset(
            "sigmoid",
            "Sigmoid instead of ReLU in the hidden layers.",
            {"model": {"activation": "sigmoid"}},
        ),
        Preset(
            "tanh", "tanh instead of ReLU in the hidden layers.", {"model": {"activation": "tanh"}}
        ),
        Preset(
            "leaky_relu",
            "Leaky ReLU (slope 0.01) instead of ReLU in the hidden layers.",
            {"model": {"activation": "leaky_relu"}},
        ),
        Preset(
            "prelu",
            "PReLU (learned slope) instead of ReLU in the hidden layers.",
            {"model": {"activation": "prelu"}},
        ),
        Preset(
            "augment",
            "The base CNN trained on randomly mirrored (left-right) pictures shifted by up to 10%.",
            {"model": {"augmentation": {"flip": "horizontal", "translate": 0.1}}},
        ),
        Preset(
            "improved",
            "The chapter's lessons on a wider CNN (64/128/256, Dense(256)): batch norm, dropout, "
            "augmentation, batch 128, a cosine schedule.",
            {
                "model": {
                    "conv_filters": [64, 128, 256],
                    "dense_units": [256],
                    "batch_norm": True,
                    "dropout": 0.5,
                    "conv_dropout": 0.2,
                    "augmentation": {"flip": "horizontal", "translate": 0.1},
                },
                "training": {"batch_size": 128, "lr_schedule": {"type": "cosine"}},
            },
        ),
    )
}

UNION_TAGS = {"optimizer": "name", "lr_schedule": "type"}
"""Keys whose objects are one of several kinds, and the key that names the kind."""


def resolve(preset: str, *layers: Mapping[str, Any]) -> ExperimentSpec:
    """The full spec for ``preset`` with a request's override layers (``models.overrides.fold``)
    applied over it once."""
    if preset not in PRESETS:
        hint = did_you_mean(preset, PRESETS)
        choose = f"choose one of {', '.join(PRESETS)}"
        message = f"unknown preset; {hint} Or {choose}" if hint else f"unknown preset; {choose}"
        raise SpecError([error_entry(("preset",), message, preset)])
    return resolve_over(PRESETS[preset].spec.model_dump(mode="json"), *layers, {"preset": preset})


def resolve_over(spec: Mapping[str, Any], *layers: Mapping[str, Any]) -> ExperimentSpec:
    """A full spec (a preset's, or a parent experiment's to rerun or continue) with a request's
    override layers folded into one object and applied over it once; SpecError naming each
    field at fault."""
    try:
        return ExperimentSpec.model_validate(applied(spec, fold(*layers)))
    except ValidationError as exc:
        errors = exc.errors()
        raise SpecError(
            [error_entry(_public_loc(e), _message(e), e.get("input"), e["type"]) for e in errors]
        ) from None


def applied(spec: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """One nested override object over a full spec: objects merge field by field, any other
    value replaces. Naming another optimizer (or learning-rate schedule type) than the spec's
    starts from that kind's defaults with every value ``overrides`` gives for it: none of the old
    kind's hyperparameters are carried over, none of the request's are dropped (a field the new
    kind lacks is the spec's 422 at it)."""
    merged = dict(spec)
    for key, value in overrides.items():
        old = merged.get(key)
        tag = UNION_TAGS.get(key)
        if not (isinstance(value, Mapping) and isinstance(old, Mapping)):
            merged[key] = value
        elif tag is not None and value.get(tag, old.get(tag)) != old.get(tag):
            merged[key] = dict(value)  # another kind: its defaults and the request's values
        else:
            merged[key] = applied(old, value)
    return merged


def _message(error: ErrorDetails) -> str:
    """Pydantic's message, with the closest valid name for a key the spec does not have."""
    if error["type"] != "extra_forbidden" or not error["loc"]:
        return error["msg"]
    *parent, key = error["loc"]
    hint = did_you_mean(key, fields_at(tuple(parent)))
    return f"{error['msg']}; {hint}" if hint else error["msg"]


def _public_loc(error: ErrorDetails) -> Loc:
    """The field's path as the user wrote it, without pydantic's union-tag steps."""
    loc = error["loc"] or CROSS_FIELD_ERRORS.get(error["type"], ())
    if len(loc) > 1 and loc[0] == "optimizer" and loc[1] in OPTIMIZER_NAMES:
        loc = (loc[0], *loc[2:])
    if loc[:2] == ("training", "lr_schedule") and len(loc) > 2 and loc[2] in SCHEDULE_TYPES:
        loc = (*loc[:2], *loc[3:])
    return loc
