"""Packing: the same set of runs trained on one worker at several slot counts
(``CONVLAB_JOBS_PER_GPU``), side by side in one run: the wall time of the whole set and the
seconds per epoch of one run of it, each as a ratio to one slot, with the GPU's utilization
and memory in use read through NVML while the set trains (none on a CPU).

Each slot count gets a fresh stack whose slots are warmed first (TensorFlow loaded, the
dataset cached), so the wall time is training, not start-up.

    python bench/packing.py                                   # 4 digits runs at 1 and 2 slots
    python bench/packing.py --data-dir DIR                    # and CIFAR-10 runs (DIR holds
                                                              # cifar-10-python.tar.gz)
    python bench/packing.py --cifar-shaped 2000               # and runs on 2,000 CIFAR-shaped
                                                              # pictures (no archive here)
    python bench/packing.py --data-dir DIR --only cifar10 --chapter --seeds 2 --slots 1,2,4,8
                                                              # the chapter study, on a GPU
"""

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynvml
from common import (
    _epoch_seconds,
    cifar_shaped,
    history_seconds,
    median,
    running_stack,
    show,
    wait_finished,
)

from worker.slots import visible_gpus


class GpuSampler(threading.Thread):
    """Reads the worker's GPUs' utilization (their mean) and memory in use (their sum) through
    NVML every half second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.busy: list[float] = []
        self.used_mb: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError:
            return  # no GPU: nothing to read
        try:
            devices = [  # the GPUs the worker trains on, as its slots count them
                pynvml.nvmlDeviceGetHandleByIndex(int(gpu))
                for gpu in visible_gpus()
                if gpu.isdigit()
            ]
            if not devices:
                return
            while not self.done.wait(0.5):
                self.busy.append(
                    sum(pynvml.nvmlDeviceGetUtilizationRates(d).gpu for d in devices) / len(devices)
                )
                self.used_mb.append(
                    sum(pynvml.nvmlDeviceGetMemoryInfo(d).used for d in devices) / 2**20
                )
        finally:
            pynvml.nvmlShutdown()

    def summary(self) -> str:
        if not self.busy:
            return "no GPU (NVML found none)"
        return (
            f"utilization mean {sum(self.busy) / len(self.busy):.0f} %, "
            f"memory in use peak {max(self.used_mb):.0f} MB"
        )


@dataclass(frozen=True)
class Measured:
    slots: int
    wall_s: float
    epoch_s: float
    gpu: str


def spec(dataset: str, preset: str, epochs: int, batch_size: int, seed: int) -> dict[str, Any]:
    return {
        "preset": preset,
        "dataset": {"name": dataset},
        "training": {"epochs": epochs, "batch_size": batch_size},
        "seed": seed,
    }


def submit_set(client: Any, args: argparse.Namespace, dataset: str) -> list[str]:
    """The set's experiment ids: ``--runs`` base runs, or the chapter study's runs."""
    if args.chapter:
        body = {
            "name": "packing",
            "template": "chapter",
            "dataset": {"name": dataset},
            "training": {"epochs": args.epochs, "batch_size": args.batch_size},
            "seeds": list(range(args.seeds)),
        }
        response = client.post("/studies", json=body)
        response.raise_for_status()
        return [str(run) for run in response.json()["experiment_ids"]]
    return [
        client.post(
            "/experiments", json=spec(dataset, "base", args.epochs, args.batch_size, seed)
        ).json()["id"]
        for seed in range(args.runs)
    ]


def measure(slots: int, dataset: str, args: argparse.Namespace, home: Path) -> Measured:
    """The set trained on one worker with ``slots`` slots."""
    settings = {"jobs_per_gpu": str(slots)}
    if args.data_dir:
        settings["data_dir"] = str(args.data_dir)
    with running_stack(home, **settings) as stack, stack.client() as client:
        warm = [
            client.post("/experiments", json=spec(dataset, "base", 1, args.batch_size, 0)).json()[
                "id"
            ]
            for _ in range(slots)
        ]
        for experiment_id in warm:  # each slot's process has loaded TensorFlow and the data
            wait_finished(client, experiment_id)
        sampler = GpuSampler()
        sampler.start()
        posted = time.time()
        ids = submit_set(client, args, dataset)
        finished = [wait_finished(client, experiment_id, timeout=7200) for experiment_id in ids]
        wall = max(_epoch_seconds(run["finished_at"]) for run in finished) - posted
        sampler.done.set()
        sampler.join()
        seconds = history_seconds(client, ids[0])
    return Measured(slots, wall, median(seconds[1:] or seconds), sampler.summary())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", default="1,2", help="slot counts, comma-separated")
    parser.add_argument("--runs", type=int, default=4, help="base-preset runs in the set")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-dir", type=Path, help="a folder with cifar-10-python.tar.gz")
    parser.add_argument(
        "--cifar-shaped", type=int, default=0, help="without --data-dir: CIFAR-shaped pictures"
    )
    parser.add_argument("--only", choices=["digits", "cifar10"], help="one dataset alone")
    parser.add_argument("--chapter", action="store_true", help="the chapter study as the set")
    parser.add_argument("--seeds", type=int, default=2, help="the chapter study's seeds")
    args = parser.parse_args()
    counts = [int(count) for count in args.slots.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        if args.data_dir is None and args.cifar_shaped:
            args.data_dir = cifar_shaped(Path(folder) / "data", args.cifar_shaped)
        datasets = ["digits"] + (["cifar10"] if args.data_dir else [])
        for dataset in [args.only] if args.only else datasets:
            homes = Path(folder) / dataset
            rows = [measure(count, dataset, args, homes / f"{count}") for count in counts]
            report(rows, dataset, args)


def report(rows: list[Measured], dataset: str, args: argparse.Namespace) -> None:
    """Each slot count's figures and their ratios to the first's."""
    one = rows[0]
    what = f"the chapter study x {args.seeds} seeds" if args.chapter else f"{args.runs} base runs"
    show(
        f"packing: {what}, {args.epochs} epochs, batch {args.batch_size}, {dataset}",
        [
            (
                f"{row.slots} slot(s)",
                f"set {row.wall_s:.1f} s ({row.wall_s / one.wall_s:.2f} x), "
                f"epoch of one run {row.epoch_s:.3f} s ({row.epoch_s / one.epoch_s:.2f} x); "
                f"{row.gpu}",
            )
            for row in rows
        ],
    )


if __name__ == "__main__":
    main()
