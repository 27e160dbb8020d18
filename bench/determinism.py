"""Benchmark: does a rerun reproduce its run? The base preset trained through convlab with and
without ``training.deterministic``, each verified (``POST /experiments/{id}/verify``), and the
verdicts and seconds per epoch printed side by side. On a CPU both reruns come out identical;
the question is for a GPU, whose fastest kernels are not deterministic (bench/gpu.sh runs it).

    python bench/determinism.py [--epochs 3] [--images 5000] [--batch-size 256]
"""

import argparse
import tempfile
from pathlib import Path
from typing import Any

import httpx
from common import (
    median,
    run_convlab,
    running_stack,
    show,
    wait_finished,
    wait_for,
    write_learnable_cifar10,
)


def verified(client: httpx.Client, body: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """The verdict on a rerun of ``body``'s run, and its seconds per epoch."""
    _, experiment = run_convlab(client, body)
    rerun = client.post(f"/experiments/{experiment['id']}/verify").json()
    wait_finished(client, rerun["id"])
    judged = wait_for(  # the rerun's worker records it just after the rerun ends
        lambda: client.get(f"/experiments/{experiment['id']}").json()["verdict"],
        timeout=60,
        what="the verdict",
    )
    epochs = client.get(f"/experiments/{experiment['id']}/history").json()["epochs"]
    return judged, [float(epoch["seconds"]) for epoch in epochs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as folder:
        data = write_learnable_cifar10(Path(folder) / "data", args.images)
        stack = running_stack(Path(folder) / "home", data_dir=str(data))
        with stack as running, running.client() as client:
            for deterministic in (True, False):
                training = {"epochs": args.epochs, "batch_size": args.batch_size}
                body = {
                    "preset": "base",
                    "dataset": {"name": "cifar10"},
                    "training": training | {"deterministic": deterministic},
                }
                verdict, seconds = verified(client, body)
                label = "deterministic" if deterministic else "default"
                rows += [
                    (f"{label}: verdict", str(verdict["summary"])),
                    (f"{label}: s/epoch (median)", f"{median(seconds):.3f}"),
                ]
    show(f"reruns of the base preset, {args.images} CIFAR-shaped pictures", rows)


if __name__ == "__main__":
    main()
