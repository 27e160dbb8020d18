"""What the benchmarks share: a CIFAR-10-shaped archive, convlab stacks started the way
`make up` starts them (tests/services.py), the chapter's plain script as a subprocess, and
statistics. Run a benchmark as ``python bench/NAME.py``; each prints its figures."""

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.archives import write_learnable_cifar10  # noqa: E402
from tests.services import BIN, redis_server, running_stack, wait_for  # noqa: E402, F401

TERMINAL = {"succeeded", "failed", "cancelled"}
SCRIPT = ROOT / "bench" / "chapter_script.py"


def cifar_shaped(data_dir: Path, train_images: int) -> Path:
    """A cifar-10-python.tar.gz of 32x32x3 pictures, ``train_images`` to train on and a fifth
    as many to validate on, that a network can learn (so learning curves, and how runs
    compare, behave as on real pictures)."""
    return write_learnable_cifar10(data_dir, train_images)


def base_spec(epochs: int, batch_size: int = 1024) -> dict[str, Any]:
    """The chapter's base network on that archive, as a convlab request."""
    return {
        "preset": "base",
        "dataset": {"name": "cifar10"},
        "training": {"epochs": epochs, "batch_size": batch_size},
    }


def run_script(data_dir: Path, epochs: int, batch_size: int = 1024) -> tuple[float, dict[str, Any]]:
    """Wall seconds from start to exit of the chapter's script, and what it printed."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            str(BIN / "python"),
            str(SCRIPT),
            str(data_dir),
            "--epochs",
            str(epochs),
            "--batch-size",
            str(batch_size),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    wall = time.perf_counter() - started
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def run_convlab(client: httpx.Client, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Seconds from the POST to the experiment's finish (its ``finished_at``, stamped by the
    worker on this machine's clock), and the experiment."""
    posted = time.time()
    experiment_id = client.post("/experiments", json=body).json()["id"]
    experiment = wait_finished(client, experiment_id)
    return _epoch_seconds(experiment["finished_at"]) - posted, experiment


def wait_finished(
    client: httpx.Client, experiment_id: str, timeout: float = 1800
) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/experiments/{experiment_id}").json()
        return body if body["status"] in TERMINAL else None

    experiment: dict[str, Any] = wait_for(finished, timeout=timeout, what=experiment_id, every=0.05)
    if experiment["status"] != "succeeded":
        raise RuntimeError(
            f"experiment {experiment_id} {experiment['status']}: {experiment['error']}"
        )
    return experiment


def history_seconds(client: httpx.Client, experiment_id: str) -> list[float]:
    epochs = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
    return [float(epoch["seconds"]) for epoch in epochs]


def _epoch_seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def started_seconds(experiment: dict[str, Any]) -> float:
    return _epoch_seconds(experiment["started_at"])


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def show(title: str, rows: list[tuple[str, str]]) -> None:
    """A titled block of ``name: value`` lines, the form BENCHMARKS.md copies."""
    print(f"\n== {title}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")
