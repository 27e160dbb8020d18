"""Class probabilities from a trained model, in a process that may import TensorFlow (the
API runs this in a spawned child so that it never loads TensorFlow itself). The child loads
Keras on ``CONVLAB_KERAS_BACKEND``'s backend: a checkpoint predicts alike on any of them."""

from collections import OrderedDict

import numpy as np

from core.config import get_settings
from worker.backends import choose

choose(get_settings().keras_backend)  # before Keras is first imported, below

_MODELS: "OrderedDict[str, object]" = OrderedDict()
_KEEP = 4
"""Models kept loaded, by checkpoint digest (repeated predictions skip loading)."""


def probabilities(
    checkpoint: bytes, digest: str, pixels: np.ndarray, pixel_max: int
) -> list[float]:
    """The softmax output of the checkpoint's model for one image of raw uint8 pixels."""
    from models.build import as_input
    from worker.checkpoints import from_bytes

    model = _MODELS.get(digest)
    if model is None:
        model = from_bytes(checkpoint)
        _MODELS[digest] = model
        if len(_MODELS) > _KEEP:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(digest)
    output = model(as_input(model, pixels[np.newaxis], pixel_max), training=False)  # type: ignore[operator,arg-type]
    return [float(value) for value in np.asarray(output)[0]]
