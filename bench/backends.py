"""Keras backends side by side: seconds per epoch of convlab's base preset, built as the worker
builds it (``models.build``, steps compiled with XLA on JAX as ``worker.backends`` does), on
each backend in a fresh process, rounds interleaved; the median of epochs 2+ (the first
compiles) and each backend's ratio to the first one named.

    python bench/backends.py [--backends tensorflow,jax] [--rounds 2] [--epochs 4]
    python bench/backends.py --data-dir DIR          # CIFAR-10 from DIR/cifar-10-python.tar.gz
    python bench/backends.py --images 50000          # CIFAR-10-shaped pictures made here
    python bench/backends.py --same-weights          # each epoch's loss side by side

With ``--same-weights`` every backend starts from one set of initial weights (built and saved
by the first) and sees the pictures in one order (no shuffling), so each epoch's loss should
agree up to floating-point rounding: a larger gap is a backend training differently.

It imports no more than the backends, Keras, NumPy, pydantic and Pillow (scikit-learn for
digits), so it also runs on a GPU box that has only JAX or PyTorch (bench/gpu-backends.sh).
"""

import argparse
import importlib.util
import json
import os
import pickle
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Results = dict[str, list[dict[str, Any]]]
"""Each backend's runs, as ``train_once`` printed them."""


def digits() -> tuple[np.ndarray, ...]:
    """scikit-learn's digits, split as ``worker.datasets`` splits them."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.images.astype(np.uint8)[..., np.newaxis],
        bunch.target.astype(np.int64),
        test_size=0.2,
        stratify=bunch.target,
        random_state=0,
    )
    return x_train, y_train, x_test, y_test


def cifar10(data_dir: Path) -> tuple[np.ndarray, ...]:
    """The official CIFAR-10 archive's training and test batches (trusted: made or downloaded
    for this benchmark), as (N, 32, 32, 3) uint8 pictures and their labels."""
    parts: dict[str, Any] = {}
    with tarfile.open(data_dir / "cifar-10-python.tar.gz", "r:gz") as tar:
        for member in tar:
            name = member.name.rsplit("/", 1)[-1]
            stream = tar.extractfile(member)
            if stream is not None and (name.startswith("data_batch") or name == "test_batch"):
                parts[name] = pickle.load(stream, encoding="bytes")
    arrays = []
    for names in (sorted(n for n in parts if n != "test_batch"), ["test_batch"]):
        x = np.concatenate([np.asarray(parts[n][b"data"], dtype=np.uint8) for n in names])
        arrays += [
            x.reshape(len(x), 3, 32, 32).transpose(0, 2, 3, 1),
            np.concatenate([np.asarray(parts[n][b"labels"]) for n in names]).astype(np.int64),
        ]
    return tuple(arrays)


def train_once(
    backend: str, dataset: str, data_dir: Path, epochs: int, batch_size: int, init: Path | None
) -> None:
    """In a fresh process on ``backend``: one run; prints its epoch seconds and losses as
    JSON. With ``init``, it starts from the weights saved there (saving them first if none
    are) and does not shuffle."""
    from worker.backends import choose, compile_steps, on_gpu, version

    choose(backend)
    import keras

    from models.build import build_model
    from models.presets import resolve

    x_train, y_train, x_test, y_test = digits() if dataset == "digits" else cifar10(data_dir)
    spec = resolve(
        "base",
        {"dataset": {"name": dataset}, "training": {"epochs": epochs, "batch_size": batch_size}},
    )
    keras.utils.set_random_seed(0)
    if init is not None and init.exists():
        model = keras.saving.load_model(init)
    else:
        model = build_model(spec)
        if init is not None:
            model.save(init)
    compile_steps(model)
    seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            seconds.append(time.perf_counter() - self.started)

    fitted = model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(x_test, y_test),
        callbacks=[Timer()],
        shuffle=init is None,
        verbose=0,
    )
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "version": version(backend),
                "device": "gpu" if on_gpu() else "cpu",
                "seconds": seconds,
                "loss": [float(loss) for loss in fitted.history["loss"]],
                "val_loss": [float(loss) for loss in fitted.history["val_loss"]],
                "val_accuracy": float(fitted.history["val_accuracy"][-1]),
            }
        )
    )


def run(
    backend: str, args: argparse.Namespace, dataset: str, data_dir: Path, init: Path | None
) -> dict[str, Any]:
    """``train_once`` in a fresh process (from the weights at ``init``, if given), its JSON
    line read back."""
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--one",
            backend,
            "--dataset",
            dataset,
            "--data-dir",
            str(data_dir),
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            *(["--init", str(init)] if init is not None else []),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if done.returncode != 0:
        raise SystemExit(f"{backend} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax", help="the first: the baseline")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--data-dir", type=Path, help="a folder with cifar-10-python.tar.gz")
    parser.add_argument("--images", type=int, help="CIFAR-10-shaped pictures made here")
    parser.add_argument("--same-weights", action="store_true", help="one start, no shuffling")
    parser.add_argument("--init", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="digits", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        train_once(args.one, args.dataset, args.data_dir, args.epochs, args.batch_size, args.init)
        return
    wanted = args.backends.split(",")
    backends = [name for name in wanted if importlib.util.find_spec(name) is not None]
    if missing := sorted(set(wanted) - set(backends)):
        print(f"not installed here, not measured: {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as scratch:
        dataset, data_dir = "digits", Path(scratch)
        if args.data_dir is not None:
            dataset, data_dir = "cifar10", args.data_dir
        elif args.images:
            from tests.archives import write_learnable_cifar10

            dataset = "cifar10"
            write_learnable_cifar10(data_dir, args.images)
        if args.batch_size is None:
            args.batch_size = 64 if dataset == "digits" else 1024
        init = Path(scratch) / "init.keras" if args.same_weights else None
        results: Results = {name: [] for name in backends}
        for _ in range(args.rounds):
            for name in backends:
                results[name].append(run(name, args, dataset, data_dir, init))
    report(results, dataset, args)


def report(
    results: dict[str, list[dict[str, Any]]], dataset: str, args: argparse.Namespace
) -> None:
    """Each backend's median seconds per epoch (epochs 2+) and its ratio to the first's."""
    print(
        f"base preset on {dataset}, batch {args.batch_size}, {args.epochs} epochs x "
        f"{args.rounds} rounds; median seconds per epoch of epochs 2+ (the first compiles)"
    )
    baseline = None
    for name, runs in results.items():
        per_epoch = statistics.median(s for one in runs for s in one["seconds"][1:])
        baseline = baseline or per_epoch
        first = runs[0]
        print(
            f"  {name} {first['version']} on {first['device']}: {per_epoch:.3f} s/epoch, "
            f"ratio to {next(iter(results))} {per_epoch / baseline:.2f}, first epoch "
            f"{statistics.median(one['seconds'][0] for one in runs):.1f} s, val_accuracy "
            f"{statistics.median(one['val_accuracy'] for one in runs):.3f}"
        )
    if args.same_weights:
        print("each epoch's loss from the same weights, pictures in the same order:")
        for key in ("loss", "val_loss"):
            losses = {name: runs[0][key] for name, runs in results.items()}
            base = next(iter(losses.values()))
            for name, loss in losses.items():
                gap = max(abs(a - b) / abs(b) for a, b in zip(loss, base, strict=True))
                shown = " ".join(f"{value:.4f}" for value in loss)
                print(f"  {key} {name}: {shown} (largest relative gap to the first: {gap:.2e})")


if __name__ == "__main__":
    main()
