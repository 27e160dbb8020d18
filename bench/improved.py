"""Benchmark: the ``improved`` preset against the chapter's best, ``batch_norm``, each trained
through convlab (POST, a warm worker) on CIFAR-10 with the same seed, one after the other.

    python bench/improved.py [--epochs 3] [--images 5000] [--data-dir DIR] [--batch-size N]

With ``--data-dir`` holding the official ``cifar-10-python.tar.gz``, the runs train on real
CIFAR-10 (``--images`` then takes a class-balanced subset of its 50,000 training pictures;
0: all, tested on all 10,000). Without it they train on a CIFAR-10-shaped archive written here:
``--images`` pictures and a fifth as many to test on, each class a fixed pattern under noise,
mirror-symmetric (a class of natural pictures does not change in a mirror, and ``improved``
flips its pictures). Each preset keeps its own batch size (batch_norm the chapter's 1024,
improved 128) unless ``--batch-size`` sets both.
"""

import argparse
import tempfile
from pathlib import Path
from typing import Any

import httpx
from common import (
    history_seconds,
    median,
    run_convlab,
    running_stack,
    show,
    write_learnable_cifar10,
)

PRESETS = ("batch_norm", "improved")
CHAPTER_BATCH_NORM = 0.778
"""The chapter's test accuracy for batch_norm after 50 epochs on CIFAR-10."""


def body(preset: str, args: argparse.Namespace, real: bool) -> dict[str, Any]:
    training: dict[str, Any] = {"epochs": args.epochs}
    if args.batch_size:
        training["batch_size"] = args.batch_size
    dataset: dict[str, Any] = {"name": "cifar10"}
    if real and args.images:
        dataset["train_size"] = args.images
    return {"preset": preset, "dataset": dataset, "training": training, "seed": args.seed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=5000, help="training pictures (0: all)")
    parser.add_argument("--data-dir", type=Path, help="a folder with cifar-10-python.tar.gz")
    parser.add_argument("--batch-size", type=int, default=0, help="for both (0: each its own)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    real = args.data_dir is not None and (args.data_dir / "cifar-10-python.tar.gz").is_file()
    with tempfile.TemporaryDirectory() as folder:
        data = (
            args.data_dir
            if real
            else write_learnable_cifar10(Path(folder) / "data", args.images or 50000, mirrored=True)
        )
        stack = running_stack(Path(folder) / "home", data_dir=str(data))
        with stack as running, running.client() as client:
            results = {preset: _run(client, body(preset, args, real)) for preset in PRESETS}
    what = "CIFAR-10" if real else "mirror-symmetric CIFAR-shaped"
    pictures = f"{args.images or 50000} {what} training pictures"
    rows: list[tuple[str, str]] = []
    for preset, result in results.items():
        rows += [
            (f"{preset} val_accuracy per epoch", " ".join(f"{v:.3f}" for v in result["curve"])),
            (f"{preset} best val_accuracy", f"{max(result['curve']):.3f}"),
            (f"{preset} train accuracy, last epoch", f"{result['train'][-1]:.3f}"),
            (f"{preset} s/epoch (median)", f"{median(result['seconds']):.2f}"),
        ]
    final = {preset: result["curve"][-1] for preset, result in results.items()}
    rows.append(
        ("improved - batch_norm, last epoch", f"{final['improved'] - final['batch_norm']:+.3f}")
    )
    if real and args.epochs >= 50:
        rows.append(
            (
                "chapter's batch_norm, 50 epochs",
                f"{CHAPTER_BATCH_NORM:.3f} (goal: improved >= 0.85)",
            )
        )
    show(f"improved vs batch_norm: {pictures}, {args.epochs} epochs, seed {args.seed}", rows)


def _run(client: httpx.Client, request: dict[str, Any]) -> dict[str, list[float]]:
    _, experiment = run_convlab(client, request)
    epochs = client.get(f"/experiments/{experiment['id']}/history").json()["epochs"]
    return {
        "curve": [float(epoch["val_accuracy"]) for epoch in epochs],
        "train": [float(epoch["accuracy"]) for epoch in epochs],
        "seconds": history_seconds(client, experiment["id"]),
    }


if __name__ == "__main__":
    main()
