"""What a spec will cost, computed from the spec alone (no TensorFlow): parameters, and the
memory its activations take for one batch, so a server can refuse what would not fit."""

import math
from typing import Protocol

from models.datasets import DATASETS
from models.errors import SpecError, error_entry
from models.spec import ExperimentSpec


class Limits(Protocol):
    """What a server allows (its settings)."""

    max_parameters: int
    max_activation_mb: int


LAYER_ACTIVATIONS = {"leaky_relu", "prelu"}
"""Activations built as separate layers (an extra output tensor, PReLU with weights)."""


def parameter_count(spec: ExperimentSpec) -> int:
    """Exactly what Keras' ``count_params`` reports for the built model (augmentation and
    dropout layers hold no weights)."""
    model = spec.model
    height, width, channels = DATASETS[spec.dataset.name].shape
    prelu = model.activation == "prelu"
    total = 0
    for filters in model.conv_filters:
        total += model.kernel_size * model.kernel_size * channels * filters + filters
        total += filters * prelu + 4 * filters * model.batch_norm
        channels, height, width = filters, height // 2, width // 2
    features = height * width * channels
    for units in model.dense_units:
        total += features * units + units + units * prelu
        features = units
    classes = DATASETS[spec.dataset.name].classes
    return total + features * classes + classes


def augmentation_layers(spec: ExperimentSpec) -> int:
    """How many preprocessing layers augment the input (each a picture-sized output)."""
    augmentation = spec.model.augmentation
    if augmentation is None:
        return 0
    ranges = (augmentation.translate, augmentation.rotate, augmentation.zoom, augmentation.contrast)
    return (augmentation.flip is not None) + sum(value > 0 for value in ranges)


def activation_bytes(spec: ExperimentSpec) -> int:
    """float32 outputs of every layer for one batch, twice (kept for the backward pass)."""
    model = spec.model
    height, width, channels = DATASETS[spec.dataset.name].shape
    per_output = 1 + (model.activation in LAYER_ACTIVATIONS)
    elements = height * width * channels * augmentation_layers(spec)
    for filters in model.conv_filters:
        elements += height * width * filters * (per_output + model.batch_norm)
        height, width = height // 2, width // 2
        elements += height * width * filters * (1 + (model.conv_dropout > 0))
    elements += sum(model.dense_units) * per_output + DATASETS[spec.dataset.name].classes
    return 2 * 4 * elements * spec.training.batch_size


def check_budget(spec: ExperimentSpec, limits: Limits) -> None:
    """SpecError (a 422) saying the estimate and the limit when a model would not fit."""
    parameters = parameter_count(spec)
    if parameters > limits.max_parameters:
        raise SpecError(
            [
                error_entry(
                    ("model",),
                    f"the model would have {parameters:,} parameters; "
                    f"this server allows {limits.max_parameters:,}",
                    parameters,
                )
            ]
        )
    megabytes = math.ceil(activation_bytes(spec) / 2**20)
    if megabytes > limits.max_activation_mb:
        raise SpecError(
            [
                error_entry(
                    ("training", "batch_size"),
                    f"a batch of {spec.training.batch_size} needs about {megabytes:,} MB of "
                    f"activations; this server allows {limits.max_activation_mb:,} MB",
                    spec.training.batch_size,
                )
            ]
        )
