"""The built model read back against its spec: every preset's model holds its spec, and a
spec that differs in any setting it names is caught, naming the field."""

from typing import Any

import pytest

from models.build import build_model
from models.presets import PRESETS, resolve
from worker.fidelity import BuiltDiffers, check_built

SMALL = {"dataset": {"name": "digits"}, "model": {"conv_filters": [8, 16], "dense_units": [16]}}


def _spec(preset: str, **sections: dict[str, Any]) -> Any:
    overrides = {key: {**SMALL.get(key, {}), **value} for key, value in sections.items()}
    return resolve(preset, SMALL | overrides)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_presets_model_holds_its_spec(preset: str) -> None:
    spec = _spec(preset)
    check_built(build_model(spec), spec)


@pytest.mark.parametrize(
    ("preset", "sections", "named"),
    [
        ("base", {"optimizer": {"learning_rate": 0.00863}}, "optimizer.learning_rate is 0.001"),
        ("momentum", {"optimizer": {"momentum": 0.5}}, "optimizer.momentum is 0.9"),
        ("momentum", {"optimizer": {"nesterov": True}}, "optimizer.nesterov is False"),
        ("adam", {"optimizer": {"beta_1": 0.8}}, "optimizer.beta_1 is 0.9"),
        ("rmsprop", {"optimizer": {"rho": 0.8}}, "optimizer.rho is 0.9"),
        ("base", {"optimizer": {"name": "sgd"}}, "optimizer is Adam, the spec says SGD"),
        ("dropout", {"model": {"dropout": 0.3}}, "model.dropout and conv_dropout is [0.5]"),
        ("l2", {"model": {"l2": 0.001}}, "model.l2 is [0.01, 0.01]"),
        ("base", {"model": {"conv_filters": [8, 32]}}, "model.conv_filters is [8, 16]"),
        ("base", {"model": {"dense_units": [32]}}, "model.dense_units is [16]"),
        ("base", {"model": {"kernel_size": 5}}, "model.kernel_size is {(3, 3)}"),
        ("base", {"model": {"activation": "tanh"}}, "model.activation is relu"),
        ("leaky_relu", {"model": {"activation": "prelu"}}, "model.activation is leaky_relu"),
        ("batch_norm", {"model": {"batch_norm_momentum": 0.9}}, "batch_norm_momentum is [0.99"),
    ],
)
def test_a_setting_the_model_does_not_hold_is_named(
    preset: str, sections: dict[str, dict[str, Any]], named: str
) -> None:
    model = build_model(_spec(preset))

    with pytest.raises(BuiltDiffers) as caught:
        check_built(model, _spec(preset, **sections))

    assert named in str(caught.value)


def test_a_resumed_runs_rate_is_not_checked_when_asked_not_to() -> None:
    model = build_model(_spec("base"))

    check_built(model, _spec("base", optimizer={"learning_rate": 0.5}), rate=False)
