"""Training data kept where the model runs: the job's pictures (training and test) go to the
accelerator once, as one table, and each batch is looked up there by row number inside the
training step, so only the row numbers and labels cross from the host per batch."""

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from models.build import METRICS


class RowLookUp(keras.layers.Layer):
    """Row numbers -> the pictures in those rows of ``table``, in the model's input type."""

    def __init__(self, table: tf.Tensor, dtype_out: str) -> None:
        super().__init__(trainable=False)
        self.table = table
        self.dtype_out = dtype_out

    def call(self, rows: tf.Tensor) -> tf.Tensor:
        return ops.cast(ops.take(self.table, rows, axis=0), self.dtype_out)


@dataclass(frozen=True)
class Feed:
    """What ``fit`` is called on: ``trainer`` (the model, or a wrapper that reads rows) and
    its inputs for training and testing."""

    trainer: keras.Model
    x_train: np.ndarray
    x_test: np.ndarray


def device() -> str:
    """Where a table goes: the first GPU this process may use, else the CPU."""
    return "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"


def wanted(setting: str) -> bool:
    """``CONVLAB_TRAIN_DATA_ON_DEVICE``: ``auto`` means on a GPU only (on a CPU the table and
    the arrays live in the same memory)."""
    return setting == "on" or (setting == "auto" and device() != "/CPU:0")


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
    with tf.device(device()):
        table = tf.identity(
            tf.constant(
                np.concatenate([x_train, x_test]),
                dtype="float16" if dtype_in == "uint8" else dtype_in,
            )
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
