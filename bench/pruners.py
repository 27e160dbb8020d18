"""Benchmark: what a hyperband pruner saves. The same search on digits twice, one after the
other on one stack: ``--trials`` random-sampler trials of ``--epochs`` epochs over the learning
rate and dropout, with the same seed (so both searches draw the same points), once with no
pruner and once with ``hyperband`` (min_resource 1, reduction_factor 3). Prints each search's
epochs trained in all, pruned trials, best val_accuracy and wall seconds, side by side, then
the ratio of epochs and the difference of the bests. A benchmark, not a test: nothing fails.

    python bench/pruners.py [--trials 16] [--epochs 9] [--seed 0]
"""

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import show, wait_for

from tests.services import server_stack

SPACE = {
    "optimizer.learning_rate": {"type": "float", "low": 1e-4, "high": 0.05, "log": True},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
}


def searched(
    client: httpx.Client, pruner: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Run the search with ``pruner`` to its end; its figures."""
    search = {"space": SPACE, "sampler": "random", "n_trials": args.trials, "pruner": pruner}
    body = {
        "name": f"pruners bench: {pruner['type']}",
        "dataset": {"name": "digits"},
        "training": {"epochs": args.epochs, "batch_size": 64},
        "seeds": [args.seed],
        "search": search,
    }
    started = time.perf_counter()
    created = client.post("/studies", json=body)
    created.raise_for_status()
    study_id = created.json()["id"]

    def ended() -> dict[str, Any] | None:
        study: dict[str, Any] = client.get(f"/studies/{study_id}").json()
        return study if study["status"] not in {"queued", "running"} else None

    study = wait_for(ended, timeout=3600, what=f"the {pruner['type']} search", every=1)
    seconds = time.perf_counter() - started
    runs = [client.get(f"/experiments/{i}").json() for i in study["experiment_ids"]]
    return {
        "status": study["status"],
        "epochs": sum(run["epochs_done"] for run in runs),
        "pruned": sum(run["status"] == "cancelled" for run in runs),
        "best": study["best_trial"]["value"] if study["best_trial"] else None,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pruners = {
        "none": {"type": "none"},
        "hyperband": {"type": "hyperband", "min_resource": 1, "reduction_factor": 3},
    }
    with (
        tempfile.TemporaryDirectory() as folder,
        server_stack(Path(folder)) as stack,
        stack.client() as client,
    ):
        figures = {name: searched(client, pruner, args) for name, pruner in pruners.items()}
    none, hyperband = figures["none"], figures["hyperband"]
    rows = [
        ("", f"{'none':>10}  {'hyperband':>10}"),
        ("status", f"{none['status']:>10}  {hyperband['status']:>10}"),
        ("epochs trained", f"{none['epochs']:>10}  {hyperband['epochs']:>10}"),
        ("trials pruned", f"{none['pruned']:>10}  {hyperband['pruned']:>10}"),
        ("best val_accuracy", f"{none['best']:>10.4f}  {hyperband['best']:>10.4f}"),
        ("wall seconds", f"{none['seconds']:>10.1f}  {hyperband['seconds']:>10.1f}"),
        ("epochs, hyperband/none", f"{hyperband['epochs'] / none['epochs']:.3f}"),
        ("best, hyperband - none", f"{hyperband['best'] - none['best']:+.4f}"),
        ("seconds, hyperband/none", f"{hyperband['seconds'] / none['seconds']:.3f}"),
    ]
    title = f"{args.trials} random trials on digits, {args.epochs} epochs each, seed {args.seed}"
    show(title, rows)


if __name__ == "__main__":
    main()
