"""Benchmark 5: faster training without changing results. Trains convlab's base model the
way the worker does (``worker.datasets.prepare``, ``models.build``) on a CIFAR-10-shaped
archive, once per configuration in a fresh process (thread settings apply only before
TensorFlow starts), rounds interleaved; reports the median seconds per epoch (epochs 2+),
the speed-up over the chapter's way and how far each history strays from it.

    python bench/training_speed.py [--rounds 2] [--epochs 4] [--images 5000] [--batch-size 256]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import BIN, cifar_shaped, median, show

CHAPTER_WAY = "chapter way (floats scaled before the model)"
CONFIGURATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        CHAPTER_WAY: {"uint8_input": False},
        "uint8 pixels, scaled in the model": {},
        "uint8 + 8 steps per execution": {"steps_per_execution": 8},
        "uint8 + XLA": {"jit_compile": True},
        "uint8 + 8 steps + XLA": {"steps_per_execution": 8, "jit_compile": True},
        "uint8, 1 thread per op": {"threads": 1},
        "uint8, batches looked up in a device table": {"on_device": True},
    },
    "gpu": {
        CHAPTER_WAY: {"uint8_input": False},
        "uint8 pixels, scaled in the model": {},
        "uint8 + bf16": {"mixed": "mixed_bfloat16"},
        "uint8 + fp16": {"mixed": "mixed_float16"},
        "uint8 + bf16 + 16 steps per execution": {
            "mixed": "mixed_bfloat16",
            "steps_per_execution": 16,
        },
        "uint8 + bf16 + 16 steps + XLA": {
            "mixed": "mixed_bfloat16",
            "steps_per_execution": 16,
            "jit_compile": True,
        },
        "uint8 + bf16 + 16 steps, data on the GPU": {
            "mixed": "mixed_bfloat16",
            "steps_per_execution": 16,
            "on_device": True,
        },
        "uint8 + bf16 + 16 steps + XLA, data on the GPU": {
            "mixed": "mixed_bfloat16",
            "steps_per_execution": 16,
            "jit_compile": True,
            "on_device": True,
        },
    },
}


def train_once(options: dict[str, Any], data_dir: Path, epochs: int, batch_size: int) -> None:
    """In a fresh process: one training run; prints its epoch seconds and history."""
    import time

    import tensorflow as tf

    if "threads" in options:  # a worker runs as many threads per op as the cores it is given
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: options.pop("threads")])
    if "mixed" in options:
        tf.keras.mixed_precision.set_global_policy(options.pop("mixed"))
    from models.build import Speed, as_input, build_model
    from models.presets import resolve
    from worker.datasets import prepare
    from worker.resident import feed
    from worker.training import reset_seed

    on_device = options.pop("on_device", False)

    spec = resolve("base", {"training": {"epochs": epochs, "batch_size": batch_size}})
    data = prepare("cifar10", data_dir, train_size=None, test_size=None, seed=0)
    reset_seed(0)
    model = build_model(spec, Speed(**options))
    x_train, x_test = (as_input(model, x, 255) for x in (data.x_train, data.x_test))
    inputs = feed(model, x_train, x_test, on_device=on_device)
    seconds: list[float] = []

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            seconds.append(time.perf_counter() - self.started)

    fitted = inputs.trainer.fit(
        inputs.x_train,
        data.y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(inputs.x_test, data.y_test),
        callbacks=[Timer()],
        verbose=0,
    )
    history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
    print(json.dumps({"seconds": seconds, "history": history}))


def run(options: dict[str, Any], args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [
            str(BIN / "python"),
            __file__,
            "--one",
            json.dumps(options),
            "--data-dir",
            str(data_dir),
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def strays(history: dict[str, list[float]], reference: dict[str, list[float]]) -> float:
    """The largest relative difference of any metric at any epoch."""
    return max(
        abs(a - b) / max(abs(b), 1e-12)
        for key in reference
        for a, b in zip(history[key], reference[key], strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=5000, help="training pictures")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--set", choices=sorted(CONFIGURATIONS), default="cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        train_once(json.loads(args.one), args.data_dir, args.epochs, args.batch_size)
        return
    configurations = CONFIGURATIONS[args.set]
    seconds: dict[str, list[float]] = {name: [] for name in configurations}
    histories: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        data = cifar_shaped(Path(folder), args.images)
        for _ in range(args.rounds):
            for name, options in configurations.items():
                result = run(dict(options), args, data)
                seconds[name] += result["seconds"][1:]
                histories[name] = result["history"]
    reference = median(seconds[CHAPTER_WAY])
    show(
        f"training speed: base preset, {args.images} CIFAR-shaped images, batch "
        f"{args.batch_size}, {args.epochs} epochs x {args.rounds} rounds, {args.set} set, "
        f"{os.cpu_count()} cores",
        [
            (
                name,
                f"{median(values):.3f} s/epoch   x{reference / median(values):.2f}   "
                f"history strays {strays(histories[name], histories[CHAPTER_WAY]):.1e}",
            )
            for name, values in seconds.items()
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
