"""Spec -> compiled ``keras.Model``, layer for layer as the chapter writes its networks."""

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, regularizers

from models.datasets import DATASETS
from models.spec import SGD, Adam, ExperimentSpec, ModelSpec, Momentum, RMSprop

KERAS_ACTIVATIONS = frozenset({"relu", "sigmoid", "tanh", "elu", "selu", "gelu", "swish"})
"""Activations Keras takes by name, passed as ``activation=`` like the chapter's ``'relu'``."""

LEAKY_RELU_SLOPE = 0.01
"""The chapter's ``np.maximum(x, 0.01*x)``; Keras' own default slope differs."""


METRICS = ["accuracy"]
"""What every model reports per epoch besides its loss (and ``val_`` of both)."""


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


def build_layers(model: ModelSpec, *, classes: int) -> list[layers.Layer]:
    """The chapter's stack: (Conv2D, [BatchNorm], MaxPool) blocks, Flatten, [Dropout], Dense
    (its input is the caller's)."""
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
            stack.append(layers.BatchNormalization())
        stack.append(layers.MaxPooling2D((2, 2)))
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


def build_optimizer(spec: SGD | Momentum | RMSprop | Adam) -> keras.optimizers.Optimizer:
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
    raise UnknownComponent(f"unknown optimizer {spec!r}")


def build_model(spec: ExperimentSpec, speed: Speed = Speed()) -> keras.Model:
    """A compiled model for ``spec``: sparse categorical cross-entropy, accuracy, its optimizer."""
    dataset = DATASETS[spec.dataset.name]
    inputs: list[layers.Layer] = (
        [keras.Input(shape=dataset.shape, dtype="uint8"), layers.Rescaling(1 / dataset.pixel_max)]
        if speed.uint8_input
        else [keras.Input(shape=dataset.shape)]
    )
    model = keras.Sequential(
        [*inputs, *build_layers(spec.model, classes=dataset.classes)],
        name=f"convlab_{spec.preset}",
    )
    model.compile(
        optimizer=build_optimizer(spec.optimizer),
        loss="sparse_categorical_crossentropy",
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
