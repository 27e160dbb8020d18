"""The chapter's base model as a plain Keras script, the way a notebook user runs it: import
TensorFlow, load CIFAR-10, scale by 255, seed, build, compile, fit with the test set as
validation. The one change: ``load_data`` reads a local ``cifar-10-python.tar.gz`` (there is
no network here), as Keras would after its download.

Prints one JSON line: the seconds of each epoch (timed like convlab's worker times them, from
epoch begin to end) and the history, so ``bench/`` can compare it with a run through convlab.

    python bench/chapter_script.py DATA_DIR --epochs 3 [--batch-size 1024]
"""

import argparse
import json
import os
import pickle
import random
import tarfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.keras import layers, models


def load_data(archive: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 from its official archive: (N, 32, 32, 3) uint8 images, (N, 1) labels."""
    batches: dict[str, dict[bytes, object]] = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if name.startswith(("data_batch_", "test_batch")):
                stream = tar.extractfile(member)
                assert stream is not None
                batches[name] = pickle.load(stream, encoding="bytes")  # trusted benchmark data

    def part(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([np.asarray(batches[n][b"data"], dtype=np.uint8) for n in names])
        y = np.concatenate([np.asarray(batches[n][b"labels"]) for n in names])
        return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y.reshape(-1, 1)

    return part([f"data_batch_{i}" for i in range(1, 6)]), part(["test_batch"])


def reset_seed(seed: int = 0) -> None:
    os.environ["PYTHONHASHSEED"] = "0"
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


class EpochTimer(tf.keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()

    (x_train, t_train), (x_test, t_test) = load_data(args.data_dir / "cifar-10-python.tar.gz")
    x_train = x_train / 255.0
    x_test = x_test / 255.0

    reset_seed(0)
    model = models.Sequential(
        [
            layers.Input((32, 32, 3)),
            layers.Conv2D(32, (3, 3), padding="same", activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), padding="same", activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(128, (3, 3), padding="same", activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    optimizer = tf.keras.optimizers.Adam(learning_rate=1e-3)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    timer = EpochTimer()
    history = model.fit(
        x_train,
        t_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
        validation_data=(x_test, t_test),
        callbacks=[timer],
    )
    print(
        json.dumps(
            {
                "parameters": model.count_params(),
                "epoch_seconds": timer.seconds,
                "history": {
                    key: [float(v) for v in values] for key, values in history.history.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
