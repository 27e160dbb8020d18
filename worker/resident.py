"""Training data kept where the model runs: the job's pictures (training and test) go to the
accelerator once, as one table, and each batch is looked up there by row number inside the
training step, so only the row numbers and labels cross from the host per batch.

On TensorFlow the table is a constant placed on the device; on JAX and PyTorch, a
non-trainable Keras variable (the backend puts it on its default device, the GPU when it has
one), which the trainer holds and the model's checkpoints never include."""

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from models.build import METRICS
from worker.backends import backend, on_gpu


class RowLookUp(keras.layers.Layer):
    """Row numbers -> the pictures in those rows of ``table``, in the model's input type."""

    def __init__(self, table: Any, dtype_out: str) -> None:
        super().__init__(trainable=False)
        self.table = table
        self.dtype_out = dtype_out

    def call(self, rows: Any) -> Any:
        return ops.cast(ops.take(self.table, rows, axis=0), self.dtype_out)


@dataclass(frozen=True)
class Feed:
    """What ``fit`` is called on: ``trainer`` (the model, or a wrapper that reads rows) and
    its inputs for training and testing."""

    trainer: keras.Model
    x_train: np.ndarray
    x_test: np.ndarray


def wanted(setting: str) -> bool:
    """``CONVLAB_TRAIN_DATA_ON_DEVICE``: ``auto`` means on a GPU only (on a CPU the table and
    the arrays live in the same memory)."""
    return setting == "on" or (setting == "auto" and on_gpu())


def feed(model: keras.Model, x_train: np.ndarray, x_test: np.ndarray, *, on_device: bool) -> Feed:
    """``model`` and the arrays as they are, or (``on_device``) both arrays put on the device
    and ``model`` (compiled; it is trained, not copied) wrapped in a trainer that looks its
    inputs up by row.

    GPUs gather floats, so uint8 pixels travel as float16, which holds every value 0..255
    exactly: the model sees the same numbers either way.
    """
    if not on_device:
        return Feed(model, x_train, x_test)
    dtype_in = model.inputs[0].dtype
    table = _table(
        np.concatenate([x_train, x_test]), "float16" if dtype_in == "uint8" else dtype_in
    )
    rows = keras.Input(shape=(), dtype="int32")
    trainer = keras.Model(rows, model(RowLookUp(table, dtype_in)(rows)), name=model.name)
    trainer.compile(
        optimizer=model.optimizer,
        loss=model.loss,
        metrics=METRICS,
        steps_per_execution=model.steps_per_execution,
        jit_compile=model.jit_compile,
    )
    train_rows = np.arange(len(x_train), dtype=np.int32)
    return Feed(trainer, train_rows, len(x_train) + np.arange(len(x_test), dtype=np.int32))


def _table(pixels: np.ndarray, dtype: str) -> Any:
    """``pixels`` as ``dtype`` on the device the backend trains on."""
    if backend() == "tensorflow":
        import tensorflow as tf

        with tf.device("/GPU:0" if on_gpu() else "/CPU:0"):
            return tf.identity(tf.constant(pixels, dtype=dtype))
    return keras.Variable(pixels.astype(dtype), trainable=False, autocast=False, name="pictures")
