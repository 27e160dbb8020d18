"""Spec -> compiled ``keras.Model``, layer for layer as the chapter writes its networks."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers, regularizers

from models.datasets import DATASETS
from models.spec import (
    SGD,
    Adam,
    AdamW,
    Augmentation,
    ExperimentSpec,
    ModelSpec,
    Momentum,
    RMSprop,
)

KERAS_ACTIVATIONS = frozenset({"relu", "sigmoid", "tanh", "elu", "selu", "gelu", "swish"})
"""Activations Keras takes by name, passed as ``activation=`` like the chapter's ``'relu'``."""

LEAKY_RELU_SLOPE = 0.01
"""The chapter's ``np.maximum(x, 0.01*x)``; Keras' own default slope differs."""


METRICS = ["accuracy"]
"""What every model reports per epoch besides its loss (and ``val_`` of both)."""

FLIP_MODES = {"horizontal": "horizontal", "vertical": "vertical", "both": "horizontal_and_vertical"}
"""The spec's flip names and Keras' ``RandomFlip`` modes."""


class UnknownComponent(ValueError):
    """A spec names a layer, activation or optimizer the builder does not know."""


@dataclass(frozen=True)
class Speed:
    """How a model trains faster without learning anything else (server settings, not spec;
    ``bench/training_speed.py`` measures each)."""

    uint8_input: bool = True
    """Feed raw uint8 pixels and scale them in the graph: a quarter of the bytes per batch and
    no float copy of the dataset per job."""
    steps_per_execution: int = 1
    """Batches per call into TensorFlow (batch-end callbacks then run every that many)."""
    jit_compile: bool = False
    """Compile the training step with XLA."""


def _activation_layer(name: str, *, conv: bool) -> layers.Layer:
    """A separate activation layer for the activations that are layers, not functions."""
    if name == "leaky_relu":
        return layers.LeakyReLU(negative_slope=LEAKY_RELU_SLOPE)
    if name == "prelu":
        # One learned slope per channel (shared over height and width) for Conv2D outputs.
        return layers.PReLU(shared_axes=[1, 2] if conv else None)
    raise UnknownComponent(f"unknown activation {name!r}")


def _hidden(
    make: Callable[..., layers.Layer], activation: str, *, conv: bool
) -> list[layers.Layer]:
    """A hidden layer with its activation: inline when Keras knows it by name, else a layer."""
    if activation in KERAS_ACTIVATIONS:
        return [make(activation=activation)]
    return [make(activation=None), _activation_layer(activation, conv=conv)]


@keras.saving.register_keras_serializable(package="convlab")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy against integer labels smoothed toward the uniform distribution: Keras'
    sparse loss takes no ``label_smoothing``, so the labels become one-hot rows here."""

    def __init__(
        self,
        label_smoothing: float = 0.0,
        name: str = "smoothed_sparse_crossentropy",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true: Any, y_pred: Any) -> Any:
        classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        return keras.losses.categorical_crossentropy(
            keras.ops.one_hot(labels, classes, dtype=y_pred.dtype),
            y_pred,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def build_augmentation(augmentation: Augmentation | None) -> list[layers.Layer]:
    """Keras preprocessing layers for the spec's augmentation, on pictures scaled to [0, 1];
    each acts in training only (no weights: parameter counts do not change)."""
    if augmentation is None:
        return []
    stack: list[layers.Layer] = []
    if augmentation.flip is not None:
        stack.append(layers.RandomFlip(FLIP_MODES[augmentation.flip]))
    if augmentation.translate > 0:
        stack.append(layers.RandomTranslation(augmentation.translate, augmentation.translate))
    if augmentation.rotate > 0:
        stack.append(layers.RandomRotation(augmentation.rotate))
    if augmentation.zoom > 0:
        stack.append(layers.RandomZoom(augmentation.zoom, augmentation.zoom))
    if augmentation.contrast > 0:
        # (c, c): Keras 3.15 reads one number as (0, c), which only ever raises contrast
        contrast = (augmentation.contrast, augmentation.contrast)
        stack.append(layers.RandomContrast(contrast, value_range=(0, 1)))
    return stack


def build_loss(label_smoothing: float) -> str | keras.losses.Loss:
    """The chapter's sparse cross-entropy, smoothed when the spec asks for it."""
    if label_smoothing == 0:
        return "sparse_categorical_crossentropy"
    return SmoothedSparseCrossentropy(label_smoothing)


def build_layers(model: ModelSpec, *, classes: int) -> list[layers.Layer]:
    """The chapter's stack: (Conv2D, [BatchNorm], MaxPool, [Dropout]) blocks, Flatten,
    [Dropout], Dense (its input, and any augmentation before it, are the caller's)."""
    kernel_regularizer = regularizers.l2(model.l2) if model.l2 > 0 else None
    stack: list[layers.Layer] = []
    for filters in model.conv_filters:
        stack += _hidden(
            lambda activation, filters=filters: layers.Conv2D(
                filters,
                (model.kernel_size, model.kernel_size),
                padding="same",
                activation=activation,
                kernel_regularizer=kernel_regularizer,
            ),
            model.activation,
            conv=True,
        )
        if model.batch_norm:
            stack.append(layers.BatchNormalization(momentum=model.batch_norm_momentum))
        stack.append(layers.MaxPooling2D((2, 2)))
        if model.conv_dropout > 0:
            stack.append(layers.Dropout(model.conv_dropout))
    stack.append(layers.Flatten())
    if model.dropout > 0:
        stack.append(layers.Dropout(model.dropout))
    for units in model.dense_units:
        stack += _hidden(
            lambda activation, units=units: layers.Dense(units, activation=activation),
            model.activation,
            conv=False,
        )
    # float32 even under a mixed-precision policy: a softmax in 16 bits loses small classes
    stack.append(layers.Dense(classes, activation="softmax", dtype="float32"))
    return stack


def build_optimizer(spec: SGD | Momentum | RMSprop | Adam | AdamW) -> keras.optimizers.Optimizer:
    """The optimizer a spec names, with exactly the hyperparameters it gives."""
    match spec:
        case SGD():
            return keras.optimizers.SGD(learning_rate=spec.learning_rate)
        case Momentum():
            return keras.optimizers.SGD(
                learning_rate=spec.learning_rate, momentum=spec.momentum, nesterov=spec.nesterov
            )
        case RMSprop():
            return keras.optimizers.RMSprop(
                learning_rate=spec.learning_rate, rho=spec.rho, epsilon=spec.epsilon
            )
        case Adam():
            return keras.optimizers.Adam(
                learning_rate=spec.learning_rate,
                beta_1=spec.beta_1,
                beta_2=spec.beta_2,
                epsilon=spec.epsilon,
            )
        case AdamW():
            return keras.optimizers.AdamW(
                learning_rate=spec.learning_rate,
                weight_decay=spec.weight_decay,
                beta_1=spec.beta_1,
                beta_2=spec.beta_2,
                epsilon=spec.epsilon,
            )
    raise UnknownComponent(f"unknown optimizer {spec!r}")


def build_model(spec: ExperimentSpec, speed: Speed = Speed()) -> keras.Model:
    """A compiled model for ``spec``: sparse categorical cross-entropy (label-smoothed if asked),
    accuracy, its optimizer; augmentation layers right after the input's scaling."""
    dataset = DATASETS[spec.dataset.name]
    inputs: list[layers.Layer] = (
        [keras.Input(shape=dataset.shape, dtype="uint8"), layers.Rescaling(1 / dataset.pixel_max)]
        if speed.uint8_input
        else [keras.Input(shape=dataset.shape)]
    )
    model = keras.Sequential(
        [
            *inputs,
            *build_augmentation(spec.model.augmentation),
            *build_layers(spec.model, classes=dataset.classes),
        ],
        name=f"convlab_{spec.preset}",
    )
    model.compile(
        optimizer=build_optimizer(spec.optimizer),
        loss=build_loss(spec.training.label_smoothing),
        metrics=METRICS,
        steps_per_execution=speed.steps_per_execution,
        jit_compile=speed.jit_compile,
    )
    return model


def as_input(model: keras.Model, pixels: np.ndarray, pixel_max: int) -> np.ndarray:
    """Raw uint8 pixels in the form ``model`` takes: as they are for a model that scales them
    itself, else as float32 in [0, 1] (checkpoints saved before models took uint8), computed
    as its Rescaling layer does (times the float32 reciprocal), so both give the same bits."""
    if model.inputs[0].dtype == "uint8":
        return pixels
    return pixels.astype(np.float32) * np.float32(1 / pixel_max)
