"""Benchmark 2: many short experiments. Eight experiments through the API on one warm worker
against eight runs of the chapter's plain script one after another (each imports
TensorFlow and loads the data again).

    python bench/many.py [--count 8] [--epochs 1] [--images 5000]
"""

import argparse
import tempfile
import time
from pathlib import Path

from common import (
    base_spec,
    cifar_shaped,
    run_convlab,
    run_script,
    running_stack,
    show,
    wait_finished,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--images", type=int, default=5000, help="training pictures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = cifar_shaped(Path(folder) / "data", args.images)
        started = time.perf_counter()
        for _ in range(args.count):
            run_script(data, args.epochs)
        scripts = time.perf_counter() - started
        stack = running_stack(Path(folder) / "home", data_dir=str(data))
        with stack as running, running.client() as client:
            run_convlab(client, base_spec(1))  # warm: TensorFlow imported, dataset cached
            started = time.perf_counter()
            ids = [
                client.post("/experiments", json=base_spec(args.epochs)).json()["id"]
                for _ in range(args.count)
            ]
            for experiment_id in ids:
                wait_finished(client, experiment_id)
            convlab = time.perf_counter() - started
    show(
        f"many: {args.count} experiments of {args.epochs} epoch(s), base preset, "
        f"{args.images} CIFAR-shaped images",
        [
            (f"{args.count} plain scripts, one after another, s", f"{scripts:.1f}"),
            (f"{args.count} experiments on one warm worker, s", f"{convlab:.1f}"),
            ("convlab/scripts", f"{convlab / scripts:.3f}   (target <= 0.6)"),
        ],
    )


if __name__ == "__main__":
    main()
