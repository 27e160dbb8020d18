"""The model as Keras built it, read back and checked against its spec: a hyperparameter the
builder dropped or changed fails the run before its first epoch instead of labelling numbers
with values they were not trained with."""

import math
from collections.abc import Iterator

import keras
from keras import layers

from models.build import LEAKY_RELU_SLOPE
from models.datasets import DATASETS
from models.spec import SGD, Adam, AdamW, ExperimentSpec, Momentum, RMSprop

RELATIVE_TOLERANCE = 1e-6
"""Keras keeps hyperparameters as float32: 0.00863 reads back as 0.0086300000548."""

OPTIMIZER_CLASSES = {
    SGD: keras.optimizers.SGD,
    Momentum: keras.optimizers.SGD,
    RMSprop: keras.optimizers.RMSprop,
    Adam: keras.optimizers.Adam,
    AdamW: keras.optimizers.AdamW,
}


class BuiltDiffers(Exception):
    """The built model does not hold what its spec says."""


def check_built(model: keras.Model, spec: ExperimentSpec, *, rate: bool = True) -> None:
    """Raise BuiltDiffers naming every setting of ``spec`` that ``model`` does not hold;
    ``rate`` False skips the learning rate (a resumed run's schedule has moved it)."""
    differences = [
        f"{field} is {_shown(built)}, the spec says {_shown(wanted)}"
        for field, built, wanted in _pairs(model, spec, rate=rate)
        if not _same(built, wanted)
    ]
    if differences:
        raise BuiltDiffers(
            "the model Keras built differs from its spec: "
            + "; ".join(differences)
            + ". Nothing was trained; this is a convlab bug, please report it with the spec"
        )


Pair = tuple[str, object, object]


def _pairs(model: keras.Model, spec: ExperimentSpec, *, rate: bool) -> Iterator[Pair]:
    """(field, what the model holds, what the spec says) for each setting the spec names."""
    yield from _optimizer_pairs(model.optimizer, spec, rate=rate)
    yield from _layer_pairs(model, spec)


def _optimizer_pairs(
    optimizer: keras.optimizers.Optimizer, spec: ExperimentSpec, *, rate: bool
) -> Iterator[Pair]:
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a loss-scale wrapper
    wanted = spec.optimizer
    built_class, wanted_class = type(optimizer).__name__, OPTIMIZER_CLASSES[type(wanted)].__name__
    yield "optimizer", built_class, wanted_class
    if built_class != wanted_class:
        return  # its hyperparameters are another optimizer's
    for field, value in wanted.model_dump().items():
        if field == "name" or (field == "learning_rate" and not rate):
            continue
        built = getattr(optimizer, field)
        if isinstance(built, keras.Variable):
            built = float(built.numpy())
        yield f"optimizer.{field}", built, value
    if isinstance(wanted, SGD):
        yield "optimizer.momentum", optimizer.momentum, 0.0


def _layer_pairs(model: keras.Model, spec: ExperimentSpec) -> Iterator[Pair]:
    wanted = spec.model
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    yield "model.conv_filters", [layer.filters for layer in convs], wanted.conv_filters
    kernel = (wanted.kernel_size, wanted.kernel_size)
    yield "model.kernel_size", {layer.kernel_size for layer in convs}, {kernel}
    l2 = [_l2_of(layer) for layer in convs]
    yield "model.l2", l2, [wanted.l2] * len(convs)
    *hidden, output = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    yield "model.dense_units", [layer.units for layer in hidden], wanted.dense_units
    yield "classes", output.units, DATASETS[spec.dataset.name].classes
    yield "model.activation", _activations(model, [*convs, *hidden]), wanted.activation
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    yield "model.batch_norm", bool(norms), wanted.batch_norm
    if wanted.batch_norm:
        momenta = [layer.momentum for layer in norms]
        yield "model.batch_norm_momentum", momenta, [wanted.batch_norm_momentum] * len(norms)
    rates = [layer.rate for layer in model.layers if isinstance(layer, layers.Dropout)]
    expected = [wanted.conv_dropout] * len(wanted.conv_filters) * (wanted.conv_dropout > 0)
    expected += [wanted.dropout] * (wanted.dropout > 0)
    yield "model.dropout and conv_dropout", rates, expected


def _l2_of(layer: layers.Conv2D) -> float:
    regularizer = layer.kernel_regularizer
    return 0.0 if regularizer is None else float(regularizer.l2)


def _activations(model: keras.Model, hidden: list[layers.Layer]) -> str | set[str]:
    """The one activation of the hidden layers, as the spec names it (a set if they differ)."""
    leaky = [layer for layer in model.layers if isinstance(layer, layers.LeakyReLU)]
    if leaky and all(math.isclose(layer.negative_slope, LEAKY_RELU_SLOPE) for layer in leaky):
        named = {"leaky_relu"}
    elif any(isinstance(layer, layers.PReLU) for layer in model.layers):
        named = {"prelu"}
    else:
        named = {_name_of(layer.activation) for layer in hidden}
    return named.pop() if len(named) == 1 else named


def _name_of(activation: object) -> str:
    """The spec's name of a Keras activation function (``swish`` is Keras' ``silu``)."""
    name = keras.activations.serialize(activation)
    return {"silu": "swish"}.get(name, name) if isinstance(name, str) else str(name)


def _same(built: object, wanted: object) -> bool:
    """Equal, floats within float32's rounding, element by element in lists."""
    if isinstance(built, list) and isinstance(wanted, list):
        return len(built) == len(wanted) and all(map(_same, built, wanted))
    if isinstance(built, float | int) and isinstance(wanted, float | int):
        if isinstance(built, bool) or isinstance(wanted, bool):
            return built == wanted
        return math.isclose(built, wanted, rel_tol=RELATIVE_TOLERANCE)
    return built == wanted


def _shown(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_shown, value)) + "]"
    return str(value)
