"""The spec beyond the chapter: augmentation layers, dropout after conv blocks, batch norm's
momentum, AdamW, label smoothing, the augment and improved presets, each inspected in the Keras
objects it builds; improved trained end to end through a real API and worker."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.budget import activation_bytes, parameter_count
from models.build import SmoothedSparseCrossentropy, build_model
from models.presets import PRESETS, resolve
from models.spec import ExperimentSpec
from tests.archives import write_learnable_cifar10
from tests.services import Stack, running_stack, wait_for_status
from worker.checkpoints import from_bytes, to_bytes
from worker.datasets import load_dataset
from worker.training import reset_seed

TERMINAL = {"succeeded", "failed", "cancelled"}
EVERY_AUGMENTATION = {"flip": "both", "translate": 0.2, "rotate": 0.1, "zoom": 0.3, "contrast": 0.4}


def _names(model: keras.Model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def _spec(preset: str = "base", **overrides: Any) -> ExperimentSpec:
    return resolve(preset, overrides)


def test_augmentation_builds_each_preprocessing_layer_after_the_scaling() -> None:
    model = build_model(_spec(model={"augmentation": EVERY_AUGMENTATION}))
    names = _names(model)
    assert names[:7] == [
        "Rescaling", "RandomFlip", "RandomTranslation", "RandomRotation", "RandomZoom",
        "RandomContrast", "Conv2D",
    ]  # fmt: skip
    flip, translate, rotate, zoom, contrast = model.layers[1:6]
    assert flip.mode == "horizontal_and_vertical"
    assert (translate.height_factor, translate.width_factor) == (0.2, 0.2)
    assert rotate.factor == (-0.1, 0.1)
    assert (zoom.height_factor, zoom.width_factor) == (0.3, 0.3)
    assert contrast.factor == (0.4, 0.4)  # a factor in [0.6, 1.4]
    assert contrast.value_range == (0, 1)  # pictures are scaled to [0, 1] before it
    only_flip = build_model(_spec(model={"augmentation": {"flip": "vertical"}}))
    assert _names(only_flip)[1:3] == ["RandomFlip", "Conv2D"]
    assert only_flip.layers[1].mode == "vertical"
    assert "RandomFlip" not in _names(build_model(_spec()))


def test_augmentation_acts_in_training_only_and_evaluation_stays_deterministic() -> None:
    model = build_model(_spec(model={"augmentation": EVERY_AUGMENTATION}))
    pictures = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    first = np.asarray(model(pictures, training=False))
    assert np.array_equal(first, np.asarray(model(pictures, training=False)))
    assert not np.allclose(first, np.asarray(model(pictures, training=True)), atol=1e-6)
    plain = build_model(_spec())
    plain.set_weights(model.get_weights())
    assert np.array_equal(first, np.asarray(plain(pictures, training=False)))


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": {"augmentation": EVERY_AUGMENTATION}},
        {"model": {"conv_dropout": 0.3, "augmentation": {"flip": "horizontal"}}},
        {"model": {"activation": "prelu", "batch_norm": True, "conv_dropout": 0.1}},
        {"model": {"batch_norm": True, "batch_norm_momentum": 0.5}},
        {"dataset": {"name": "digits"}, "model": {"augmentation": EVERY_AUGMENTATION}},
        {"dataset": {"name": "mnist"}, "preset": "improved"},
    ],
)
def test_parameter_estimate_stays_exact_and_augmentation_adds_no_weights(
    overrides: dict[str, Any],
) -> None:
    preset = overrides.pop("preset", "base")
    spec = resolve(preset, overrides)
    assert parameter_count(spec) == build_model(spec).count_params()
    bare = spec.model.model_copy(update={"augmentation": None, "conv_dropout": 0.0})
    assert parameter_count(spec) == parameter_count(spec.model_copy(update={"model": bare}))


def test_activation_estimate_counts_the_augmented_pictures_and_dropouts() -> None:
    base = activation_bytes(_spec())
    flipped = activation_bytes(_spec(model={"augmentation": {"flip": "horizontal"}}))
    assert flipped - base == 2 * 4 * 32 * 32 * 3 * 1024  # one picture-sized output per image
    dropped = activation_bytes(_spec(model={"conv_dropout": 0.2}))
    assert dropped - base == 2 * 4 * (16 * 16 * 32 + 8 * 8 * 64 + 4 * 4 * 128) * 1024


def test_conv_dropout_follows_each_conv_block_at_its_rate() -> None:
    model = build_model(_spec(model={"conv_dropout": 0.25, "batch_norm": True}))
    names = _names(model)
    assert names[1:9] == [
        "Conv2D", "BatchNormalization", "MaxPooling2D", "Dropout",
        "Conv2D", "BatchNormalization", "MaxPooling2D", "Dropout",
    ]  # fmt: skip
    rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == [0.25, 0.25, 0.25]
    assert "Dropout" not in _names(build_model(_spec()))


def _momenta(model: keras.Model) -> list[float]:
    return [
        layer.momentum
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def test_batch_norm_momentum_reaches_every_batch_normalization_layer() -> None:
    default = build_model(_spec("batch_norm"))
    assert _momenta(default) == [0.99, 0.99, 0.99]  # Keras' own default
    lower = build_model(_spec("batch_norm", model={"batch_norm_momentum": 0.9}))
    assert _momenta(lower) == [0.9, 0.9, 0.9]
    assert lower.count_params() == default.count_params()  # a rate, not a weight
    ignored = build_model(_spec(model={"batch_norm_momentum": 0.9}))  # batch_norm false
    assert _momenta(ignored) == [] and _names(ignored) == _names(build_model(_spec()))


@pytest.mark.slow
def test_a_lower_batch_norm_momentum_lets_a_short_run_evaluate_above_chance(
    tmp_path: Path,
) -> None:
    digits = load_dataset("digits", tmp_path)
    accuracy: dict[float, float] = {}
    for momentum in (0.9, 0.99):
        reset_seed(0)
        overrides = {"dataset": {"name": "digits"}, "model": {"batch_norm_momentum": momentum}}
        model = build_model(_spec("batch_norm", **overrides))
        model.fit(digits.x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
        accuracy[momentum] = model.evaluate(digits.x_test, digits.y_test, verbose=0)[1]
    # 69 steps: 0.9's moving statistics have settled; 0.99's still weigh their initial mean 0
    # and variance 1 by a half (0.99**69), so evaluation normalizes with the wrong statistics
    assert accuracy[0.9] > 0.8 and accuracy[0.99] < 0.3, accuracy  # chance is 0.1


def test_adamw_gets_exactly_its_hyperparameters() -> None:
    optimizer = {"name": "adamw", "learning_rate": 0.002, "weight_decay": 0.05, "beta_2": 0.99}
    built = build_model(_spec(optimizer=optimizer)).optimizer
    assert isinstance(built, keras.optimizers.AdamW)
    assert built.weight_decay == pytest.approx(0.05)
    assert float(built.learning_rate.numpy()) == pytest.approx(0.002)
    assert (built.beta_1, built.beta_2) == (0.9, 0.99)


def test_label_smoothing_smooths_the_loss_and_survives_a_checkpoint() -> None:
    assert build_model(_spec()).loss == "sparse_categorical_crossentropy"
    model = build_model(_spec(training={"label_smoothing": 0.2}))
    assert isinstance(model.loss, SmoothedSparseCrossentropy)
    assert model.loss.label_smoothing == 0.2
    labels = np.array([0, 3])
    predicted = np.full((2, 10), 0.02, dtype=np.float32)
    predicted[0, 0] = predicted[1, 3] = 0.82
    smoothed = np.full((2, 10), 0.02)  # 0.2 of each label spread over ten classes
    smoothed[0, 0] = smoothed[1, 3] = 0.82
    expected = np.mean(-np.sum(smoothed * np.log(predicted), axis=1))
    assert float(model.loss(labels, predicted)) == pytest.approx(expected, rel=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy()
    assert float(plain(labels, predicted)) < float(model.loss(labels, predicted))
    restored = from_bytes(to_bytes(model))
    assert isinstance(restored.loss, SmoothedSparseCrossentropy)
    assert restored.loss.label_smoothing == 0.2


def test_presets_beyond_the_chapter_hold_what_they_say() -> None:
    augment = PRESETS["augment"].spec
    assert augment.model.augmentation is not None
    assert (augment.model.augmentation.flip, augment.model.augmentation.translate) == (
        "horizontal",
        0.1,
    )
    assert augment.model.model_copy(update={"augmentation": None}) == PRESETS["base"].spec.model
    improved = PRESETS["improved"].spec
    assert improved.model.batch_norm and improved.model.dropout > 0
    assert improved.model.conv_dropout > 0 and improved.model.augmentation is not None
    assert improved.training.lr_schedule is not None
    assert improved.training.lr_schedule.type == "cosine"
    names = _names(build_model(improved))
    assert names[:4] == ["Rescaling", "RandomFlip", "RandomTranslation", "Conv2D"]


def test_another_schedule_over_a_preset_starts_from_its_own_defaults() -> None:
    spec = resolve("improved", {"training": {"lr_schedule": {"type": "step", "every": 5}}})
    assert spec.training.lr_schedule is not None
    assert spec.training.lr_schedule.model_dump() == {"type": "step", "every": 5, "factor": 0.5}
    assert resolve("improved", {"training": {"lr_schedule": None}}).training.lr_schedule is None
    off = resolve("improved", {"model": {"augmentation": None}})
    assert "RandomFlip" not in _names(build_model(off))


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        ({"model": {"augmentation": {"flip": "diagonal"}}}, ["model", "augmentation", "flip"],
         "'horizontal', 'vertical' or 'both'"),
        ({"model": {"augmentation": {"translate": 0.6}}}, ["model", "augmentation", "translate"],
         "less than or equal to 0.5"),
        ({"model": {"augmentation": {"contrast": 1.5}}}, ["model", "augmentation", "contrast"],
         "less than or equal to 1"),
        ({"model": {"augmentation": {"rotation": 0.1}}}, ["model", "augmentation", "rotation"],
         "did you mean `rotate`?"),
        ({"model": {"conv_dropout": 1.0}}, ["model", "conv_dropout"], "less than 1"),
        ({"model": {"batch_norm": True, "batch_norm_momentum": 1.0}},
         ["model", "batch_norm_momentum"], "less than 1"),
        ({"model": {"batch_norm_momentum": 0}}, ["model", "batch_norm_momentum"],
         "greater than 0"),
        ({"training": {"label_smoothing": 0.6}}, ["training", "label_smoothing"],
         "less than or equal to 0.5"),
        ({"optimizer": {"name": "adamw", "weight_decay": -0.1}}, ["optimizer", "weight_decay"],
         "greater than or equal to 0"),
        ({"optimizer": {"name": "adam", "weight_decay": 0.1}}, ["optimizer", "weight_decay"],
         "Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_bad_fields_beyond_the_chapter_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any], loc: list[str], message: str
) -> None:
    response = client.post("/experiments", json=body)
    assert response.status_code == 422, response.json()
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", *loc], detail
    assert message in detail["msg"], detail
    assert client.get("/experiments").json()["items"] == []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("beyond")
    write_learnable_cifar10(home / "data", 500, signal=0.5)
    with running_stack(home, data_dir=str(home / "data")) as running:
        yield running


def _train(stack: Stack, body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=body).json()["id"]
        experiment = wait_for_status(client, experiment_id, TERMINAL, timeout=300)
        assert experiment["status"] == "succeeded", stack.log_tail()
        history = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
    return experiment, history


@pytest.mark.slow
def test_improved_trains_end_to_end_on_digits(stack: Stack) -> None:
    body = {
        "preset": "improved",
        "dataset": {"name": "digits"},
        "training": {"epochs": 3, "batch_size": 32},
    }
    experiment, history = _train(stack, body)
    assert experiment["spec"]["model"]["augmentation"]["flip"] == "horizontal"
    assert [epoch["learning_rate"] for epoch in history] == pytest.approx([1e-3, 7.5e-4, 2.5e-4])
    assert history[-1]["accuracy"] > 0.3  # chance is 0.1
    assert history[-1]["loss"] < history[0]["loss"]


@pytest.mark.slow
def test_improved_trains_end_to_end_on_a_cifar_shaped_archive(stack: Stack) -> None:
    body = {"preset": "improved", "training": {"epochs": 2, "batch_size": 50}}
    experiment, history = _train(stack, body)
    assert experiment["spec"]["dataset"]["name"] == "cifar10"
    assert [epoch["epoch"] for epoch in history] == [1, 2]
    assert [epoch["learning_rate"] for epoch in history] == pytest.approx([1e-3, 5e-4])
    assert all(np.isfinite(epoch["val_loss"]) for epoch in history)
    assert experiment["final"]["accuracy"] > 0.1  # above chance on ten learnable classes


def test_a_search_may_name_the_fields_beyond_the_chapter(client: TestClient) -> None:
    space = {
        "training.lr_schedule.type": {"type": "categorical", "choices": ["step", "cosine"]},
        "model.augmentation.translate": {"type": "float", "low": 0.0, "high": 0.2},
        "model.batch_norm_momentum": {"type": "float", "low": 0.8, "high": 0.99},
    }
    body = {
        "preset": "augment",
        "dataset": {"name": "digits"},
        "training": {"epochs": 2},
        "search": {"space": space, "n_trials": 3, "parallel": 2},
    }
    study = client.post("/studies", json=body)
    assert study.status_code == 201, study.json()
    for experiment_id in study.json()["experiment_ids"]:
        spec = client.get(f"/experiments/{experiment_id}").json()["spec"]
        assert spec["training"]["lr_schedule"]["type"] in {"step", "cosine"}
        assert 0.0 <= spec["model"]["augmentation"]["translate"] <= 0.2
        assert 0.8 <= spec["model"]["batch_norm_momentum"] <= 0.99
        assert spec["model"]["augmentation"]["flip"] == "horizontal"  # the preset's, kept


@pytest.mark.parametrize(
    ("key", "param", "message"),
    [
        ("model.augmentation.rotation", {"type": "float", "low": 0, "high": 1},
         "did you mean `rotate`?"),
        ("model.augmentation.translate", {"type": "float", "low": 0, "high": 0.9},
         "less than or equal to 0.5"),
        ("model.batch_norm_momentum", {"type": "float", "low": 0.9, "high": 1.0},
         "less than 1"),
        ("training.lr_schedule.type", {"type": "categorical", "choices": ["step", "linear"]},
         "does not match any of the expected tags"),
        ("training.lr_schedule.type.deeper", {"type": "categorical", "choices": ["step"]},
         "keys are section.field or section.field.key"),
    ],
)  # fmt: skip
def test_a_search_over_a_field_beyond_the_chapter_that_cannot_be_is_422(
    client: TestClient, key: str, param: dict[str, Any], message: str
) -> None:
    body = {"dataset": {"name": "digits"}, "search": {"space": {key: param}, "n_trials": 2}}
    response = client.post("/studies", json=body)
    assert response.status_code == 422, response.json()
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "search", "space", key], detail
    assert message in detail["msg"], detail
    assert client.get("/studies").json()["items"] == []
