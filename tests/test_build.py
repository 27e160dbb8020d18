"""The Keras builder: the chapter's layer order and parameter counts, loud failures."""

import keras
import numpy as np
import pytest

from models.build import (
    Speed,
    UnknownComponent,
    as_input,
    build_layers,
    build_model,
    build_optimizer,
)
from models.presets import PRESETS, resolve
from models.spec import ModelSpec

# Base: 896 + 18,496 + 73,856 + 262,272 + 1,290. BatchNormalization adds 4 weights per channel
# (two trained, two moving averages); PReLU one learned slope per channel and per Dense unit.
PARAMETERS = {
    **{name: 356_810 for name in PRESETS},
    "batch_norm": 356_810 + 4 * (32 + 64 + 128),
    "prelu": 356_810 + (32 + 64 + 128) + 128,
    # 64/128/256 filters with batch norm, Dense(256); its augmentation and dropouts add none.
    "improved": 1_792 + 73_856 + 295_168 + 4 * (64 + 128 + 256) + 4 * 4 * 256 * 256 + 256 + 2_570,
}


def _layer_names(model: keras.Model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_each_preset_builds_with_the_expected_parameter_count(preset: str) -> None:
    assert build_model(PRESETS[preset].spec).count_params() == PARAMETERS[preset]


def test_base_model_has_the_chapter_layer_order_and_shapes() -> None:
    model = build_model(PRESETS["base"].spec)
    assert _layer_names(model) == [
        "Rescaling",  # the chapter's x / 255, inside the model: it takes raw uint8 pixels
        "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D",
        "Flatten", "Dense", "Dense",
    ]  # fmt: skip
    assert model.inputs[0].dtype == "uint8"
    assert model.layers[0].scale == pytest.approx(1 / 255)
    assert [layer.count_params() for layer in model.layers if layer.count_params()] == [
        896, 18_496, 73_856, 262_272, 1_290,
    ]  # fmt: skip
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 10)
    assert model.layers[-1].activation.__name__ == "softmax"
    assert model.loss == "sparse_categorical_crossentropy"


def test_variants_put_their_layers_where_the_chapter_does() -> None:
    dropout = _layer_names(build_model(PRESETS["dropout"].spec))
    assert dropout[dropout.index("Flatten") + 1] == "Dropout"
    batch_norm = _layer_names(build_model(PRESETS["batch_norm"].spec))
    assert batch_norm[1:4] == ["Conv2D", "BatchNormalization", "MaxPooling2D"]
    l2 = build_model(PRESETS["l2"].spec)
    regularized = [layer for layer in l2.layers if getattr(layer, "kernel_regularizer", None)]
    assert [type(layer).__name__ for layer in regularized] == ["Conv2D"] * 3
    assert regularized[0].kernel_regularizer.l2 == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("preset", "layer", "check"),
    [
        ("leaky_relu", "LeakyReLU", lambda layer: layer.negative_slope == pytest.approx(0.01)),
        ("prelu", "PReLU", lambda layer: layer.count_params() == 32),
    ],
)
def test_layer_activations_follow_each_hidden_layer(preset: str, layer: str, check: object) -> None:
    model = build_model(PRESETS[preset].spec)
    names = _layer_names(model)
    assert names[1:4] == ["Conv2D", layer, "MaxPooling2D"]
    assert names.count(layer) == 4
    assert model.layers[1].activation.__name__ == "linear"
    assert check(model.layers[2])  # type: ignore[operator]


def test_named_activations_are_passed_to_the_layers() -> None:
    model = build_model(PRESETS["tanh"].spec)
    activations = {
        layer.activation.__name__ for layer in model.layers[:-1] if hasattr(layer, "activation")
    }
    assert activations == {"tanh"}


def test_optimizers_get_exactly_their_hyperparameters() -> None:
    rmsprop = build_model(PRESETS["rmsprop"].spec).optimizer
    assert isinstance(rmsprop, keras.optimizers.RMSprop)
    assert (rmsprop.rho, rmsprop.epsilon) == (0.9, 1e-8)
    momentum = build_model(PRESETS["momentum"].spec).optimizer
    assert isinstance(momentum, keras.optimizers.SGD)
    assert momentum.momentum == 0.9
    assert float(momentum.learning_rate) == pytest.approx(0.01)
    adam = build_model(PRESETS["adam"].spec).optimizer
    assert (adam.beta_1, adam.beta_2, adam.epsilon) == (0.9, 0.999, 1e-8)


def test_digits_models_take_8x8_grayscale() -> None:
    model = build_model(resolve("base", {"dataset": {"name": "digits"}}))
    assert model.input_shape == (None, 8, 8, 1)
    assert model.count_params() == 356_810 - 2048 * 128 + 128 * 128 - 9 * 2 * 32
    assert model.layers[0].scale == pytest.approx(1 / 16)  # digits' pixels run 0..16


def test_without_uint8_input_the_model_takes_scaled_floats() -> None:
    model = build_model(PRESETS["base"].spec, Speed(uint8_input=False))
    assert model.inputs[0].dtype == "float32"
    assert _layer_names(model)[0] == "Conv2D"
    pixels = np.array([[0, 51, 255]], dtype=np.uint8)
    np.testing.assert_allclose(as_input(model, pixels, 255), [[0.0, 0.2, 1.0]])
    assert as_input(build_model(PRESETS["base"].spec), pixels, 255) is pixels


def test_the_softmax_stays_float32_under_mixed_precision() -> None:
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(PRESETS["base"].spec)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[1].compute_dtype == "bfloat16"
    assert model.layers[-1].compute_dtype == "float32"
    assert model(np.zeros((1, 32, 32, 3), dtype=np.uint8)).dtype == "float32"


def test_builder_fails_loudly_on_components_it_does_not_know() -> None:
    unvalidated = ModelSpec.model_construct(
        **{**ModelSpec().model_dump(), "activation": "softplus"}
    )
    with pytest.raises(UnknownComponent, match="unknown activation 'softplus'"):
        build_layers(unvalidated, classes=10)
    with pytest.raises(UnknownComponent, match="unknown optimizer"):
        build_optimizer(object())  # type: ignore[arg-type]
