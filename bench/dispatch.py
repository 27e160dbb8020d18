"""Benchmark 3: dispatch latency, POST to ``running`` on an idle worker, with the embedded
SQLite broker and with Redis. ``running`` is the moment the worker claims the run (its
``started_at``, stamped on this machine's clock).

    python bench/dispatch.py [--samples 15]
"""

import argparse
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from common import (
    median,
    percentile,
    redis_server,
    running_stack,
    show,
    started_seconds,
    wait_finished,
)

TINY = {
    "dataset": {"name": "digits", "train_size": 200, "test_size": 50},
    "training": {"epochs": 1},
}


def latencies(broker: str, samples: int) -> list[float]:
    broker_server = redis_server() if broker == "redis" else nullcontext(None)
    with tempfile.TemporaryDirectory() as folder, broker_server as url:
        settings = {"broker_url": url} if url else {}
        with running_stack(Path(folder), **settings) as stack, stack.client() as client:
            wait_finished(client, client.post("/experiments", json=TINY).json()["id"])
            seconds = []
            for _ in range(samples):
                time.sleep(0.5)  # idle, as a worker between jobs is
                posted = time.time()
                experiment_id = client.post("/experiments", json=TINY).json()["id"]
                seconds.append(started_seconds(wait_finished(client, experiment_id)) - posted)
            return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=15)
    args = parser.parse_args()
    rows = []
    for broker, target in (("sqlite", 1.5), ("redis", 0.2)):
        seconds = latencies(broker, args.samples)
        rows += [
            (f"{broker} median s", f"{median(seconds):.3f}   (target <= {target})"),
            (f"{broker} p95 s", f"{percentile(seconds, 95):.3f}"),
        ]
    show(f"dispatch: POST to running on an idle worker, {args.samples} samples each", rows)


if __name__ == "__main__":
    main()
