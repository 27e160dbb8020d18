"""The spec's bounds and the presets' merging, without TensorFlow."""

from typing import Any

import pytest

from models.errors import SpecError
from models.presets import PRESETS, resolve
from models.spec import Adam, ExperimentSpec, Momentum, RMSprop, fields_at

CHAPTER_VARIANTS = {
    "base", "sgd", "momentum", "rmsprop", "adam", "dropout", "l2", "early_stopping",
    "batch_norm", "sigmoid", "tanh", "leaky_relu", "prelu",
}  # fmt: skip


def _error_locs(preset: str, overrides: dict[str, Any]) -> list[tuple[Any, ...]]:
    with pytest.raises(SpecError) as caught:
        resolve(preset, overrides)
    return [tuple(error["loc"]) for error in caught.value.errors]


def test_presets_cover_the_chapter_variants() -> None:
    assert set(PRESETS) == CHAPTER_VARIANTS | {"augment", "improved"}  # and beyond the chapter


def test_base_preset_matches_the_chapter_protocol() -> None:
    spec = PRESETS["base"].spec
    assert spec.dataset.name == "cifar10"
    assert spec.model.conv_filters == [32, 64, 128]
    assert spec.model.dense_units == [128]
    assert spec.optimizer == Adam(learning_rate=0.001)
    assert (spec.training.epochs, spec.training.batch_size) == (50, 1024)
    assert spec.training.validation_split is None


def test_each_preset_changes_only_its_own_part_of_the_base() -> None:
    base = PRESETS["base"].spec.model_dump(exclude={"preset"})
    changed = {
        name: {
            key
            for key, value in preset.spec.model_dump(exclude={"preset"}).items()
            if value != base[key]
        }
        for name, preset in PRESETS.items()
    }
    assert changed["dropout"] == changed["l2"] == changed["batch_norm"] == {"model"}
    assert changed["sgd"] == changed["momentum"] == changed["rmsprop"] == {"optimizer"}
    assert changed["early_stopping"] == {"training"}
    assert PRESETS["rmsprop"].spec.optimizer == RMSprop(learning_rate=0.001, rho=0.9, epsilon=1e-8)
    assert PRESETS["momentum"].spec.optimizer == Momentum(learning_rate=0.01, momentum=0.9)
    assert PRESETS["early_stopping"].spec.training.early_stopping is not None
    assert PRESETS["early_stopping"].spec.training.early_stopping.patience == 3


def test_resolve_merges_overrides_key_by_key_over_the_preset() -> None:
    spec = resolve("dropout", {"model": {"l2": 0.001}, "training": {"epochs": 2}})
    assert (spec.model.dropout, spec.model.l2) == (0.5, 0.001)
    assert (spec.training.epochs, spec.training.batch_size) == (2, 1024)
    assert spec.preset == "dropout"


def test_resolve_keeps_the_preset_optimizer_hyperparameters_when_the_name_is_unchanged() -> None:
    spec = resolve("momentum", {"optimizer": {"momentum": 0.5}})
    assert spec.optimizer == Momentum(learning_rate=0.01, momentum=0.5)


def test_resolve_starts_from_defaults_when_the_optimizer_changes() -> None:
    spec = resolve("adam", {"optimizer": {"name": "rmsprop", "rho": 0.8}})
    assert spec.optimizer == RMSprop(rho=0.8)


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"training": {"epochs": 10**9}}, ("training", "epochs")),
        ({"training": {"batch_size": 0}}, ("training", "batch_size")),
        ({"model": {"conv_filters": [10**6]}}, ("model", "conv_filters", 0)),
        ({"model": {"conv_filters": [8] * 10_000}}, ("model", "conv_filters")),
        ({"model": {"dropout": 1.0}}, ("model", "dropout")),
        ({"model": {"activation": "softplus"}}, ("model", "activation")),
        ({"optimizer": {"learning_rate": float("nan")}}, ("optimizer", "learning_rate")),
        ({"optimizer": {"learning_rate": -1}}, ("optimizer", "learning_rate")),
        ({"optimizer": {"learning_rate": "1e-3"}}, ("optimizer", "learning_rate")),
        ({"optimizer": {"momentum": 0.9}}, ("optimizer", "momentum")),
        ({"optimizer": {"name": "adagrad"}}, ("optimizer",)),
        ({"dataset": {"name": "imagenet"}}, ("dataset", "name")),
        ({"dataset": {"name": "../../etc/passwd"}}, ("dataset", "name")),
        ({"dataset": {"name": "digits", "train_size": 5000}}, ("dataset", "train_size")),
        ({"dataset": {"name": "digits", "test_size": 361}}, ("dataset", "test_size")),
        (
            {"dataset": {"name": "digits"}, "model": {"conv_filters": [8] * 4}},
            ("model", "conv_filters"),
        ),
        (
            {"training": {"early_stopping": {"patience": 3, "mode": "max"}}},
            ("training", "early_stopping", "mode"),
        ),
        ({"seed": -1}, ("seed",)),
        ({"layers": ["Dense"]}, ("layers",)),
    ],
)
def test_resolve_rejects_bad_values_naming_the_field(
    overrides: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    assert loc in _error_locs("base", overrides)


def test_resolve_rejects_an_unknown_preset_listing_the_known_ones() -> None:
    with pytest.raises(SpecError, match="choose one of base, sgd"):
        resolve("resnet", {})


def test_spec_accepts_a_test_size_of_the_whole_test_set() -> None:
    spec = resolve("base", {"dataset": {"name": "digits", "train_size": 1437, "test_size": 360}})
    assert ExperimentSpec.model_validate(spec.model_dump()) == spec


def test_resolve_suggests_the_preset_closest_to_a_typo() -> None:
    with pytest.raises(SpecError) as raised:
        resolve("batch_nrom", {})
    (error,) = raised.value.errors
    assert error["loc"] == ("preset",)
    assert error["msg"].startswith("unknown preset; did you mean `batch_norm`? Or choose one of ")


@pytest.mark.parametrize(
    ("preset", "overrides", "loc", "meant"),
    [
        ("base", {"training": {"epoch": 3}}, ("training", "epoch"), "epochs"),
        ("sgd", {"optimizer": {"learning_rte": 1}}, ("optimizer", "learning_rte"), "learning_rate"),
        (
            "base",
            {"training": {"early_stopping": {"patiance": 2}}},
            ("training", "early_stopping", "patiance"),
            "patience",
        ),
        ("base", {"dataset": {"train_szie": 100}}, ("dataset", "train_szie"), "train_size"),
        ("base", {"sed": 1}, ("sed",), "seed"),
    ],
)
def test_resolve_suggests_the_field_closest_to_an_unknown_key(
    preset: str, overrides: dict[str, Any], loc: tuple[Any, ...], meant: str
) -> None:
    with pytest.raises(SpecError) as raised:
        resolve(preset, overrides)
    (error,) = raised.value.errors
    assert error["loc"] == loc
    assert error["msg"] == f"Extra inputs are not permitted; did you mean `{meant}`?"


def test_an_unknown_key_like_no_field_gets_no_suggestion() -> None:
    with pytest.raises(SpecError) as raised:
        resolve("sgd", {"optimizer": {"momentum": 0.9}, "layers": ["Dense"]})
    assert [error["msg"] for error in raised.value.errors] == ["Extra inputs are not permitted"] * 2


def test_fields_at_walks_the_spec_and_the_optimizer_union() -> None:
    assert fields_at(()) == list(ExperimentSpec.model_fields)
    assert fields_at(("optimizer", "momentum")) == ["name", "learning_rate", "momentum", "nesterov"]
    assert "patience" in fields_at(("training", "early_stopping"))
    assert fields_at(("optimizer",)) == fields_at(("model", "conv_filters")) == []
