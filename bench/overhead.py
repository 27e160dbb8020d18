"""Benchmark 1: what training through convlab costs. The chapter's base network on a
CIFAR-10-shaped archive, trained by the chapter's plain script (A) and through convlab (B:
POST, a warm worker, a row and a checkpoint per epoch), interleaved A B A B in one run.

    python bench/overhead.py [--rounds 3] [--epochs 4] [--images 5000]

Per epoch: the median over epochs 2 and later (epoch 1 also traces the graph; shown apart).
Whole job: script start to exit against POST to finished_at, on a worker already warm.
"""

import argparse
import tempfile
from pathlib import Path

import httpx
from common import (
    base_spec,
    cifar_shaped,
    history_seconds,
    median,
    run_convlab,
    run_script,
    running_stack,
    show,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=5000, help="training pictures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = cifar_shaped(Path(folder) / "data", args.images)
        stack = running_stack(Path(folder) / "home", data_dir=str(data))
        with stack as running, running.client() as client:
            run_convlab(client, base_spec(1))  # warm: TensorFlow imported, dataset cached
            script, convlab = _rounds(client, data, args)
    steady = median(convlab["epochs"]) / median(script["epochs"])
    whole = median(convlab["jobs"]) / median(script["jobs"])
    show(
        f"overhead: base preset, {args.images} CIFAR-shaped images, {args.epochs} epochs, "
        f"{args.rounds} rounds A B",
        [
            ("script s/epoch (median, epochs 2+)", f"{median(script['epochs']):.3f}"),
            ("convlab s/epoch (median, epochs 2+)", f"{median(convlab['epochs']):.3f}"),
            ("convlab/script per epoch", f"{steady:.3f}   (target <= 1.03)"),
            ("script first epoch (median)", f"{median(script['first']):.3f}"),
            ("convlab first epoch (median)", f"{median(convlab['first']):.3f}"),
            ("script whole job s (median)", f"{median(script['jobs']):.2f}"),
            ("convlab whole job s (median)", f"{median(convlab['jobs']):.2f}"),
            ("convlab/script whole job", f"{whole:.3f}   (target <= 0.8)"),
        ],
    )


Timings = dict[str, list[float]]


def _rounds(client: httpx.Client, data: Path, args: argparse.Namespace) -> tuple[Timings, Timings]:
    script: Timings = {"epochs": [], "first": [], "jobs": []}
    convlab: Timings = {"epochs": [], "first": [], "jobs": []}
    for _ in range(args.rounds):
        wall, printed = run_script(data, args.epochs)
        assert printed["parameters"] == 356_810, printed["parameters"]
        _add(script, wall, printed["epoch_seconds"])
        wall, experiment = run_convlab(client, base_spec(args.epochs))
        _add(convlab, wall, history_seconds(client, experiment["id"]))
    return script, convlab


def _add(totals: Timings, wall: float, epochs: list[float]) -> None:
    totals["jobs"].append(wall)
    totals["first"].append(epochs[0])
    totals["epochs"].extend(epochs[1:])


if __name__ == "__main__":
    main()
