"""Fills an MLflow tracking store with runs of four metrics per epoch; prints the run ids.
Run with a Python that has mlflow installed (it is not a convlab dependency).

    python bench/mlflow_fill.py sqlite:///mlflow.sqlite RUNS EPOCHS
"""

import random
import sys
import time

from curves import METRICS, curve
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient


def main() -> None:
    store, runs, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    client = MlflowClient(tracking_uri=store)
    experiment = client.create_experiment("convlab-bench")
    rng = random.Random(0)
    now = int(time.time() * 1000)
    for index in range(runs):
        run = client.create_run(experiment, run_name=f"bench {index}")
        metrics = []
        for epoch in range(1, epochs + 1):
            values = curve(epoch, rng)
            metrics += [Metric(key, values[key], now, epoch) for key in METRICS]
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1,000 per batch
            client.log_batch(run.info.run_id, metrics=metrics[start : start + 1000])
        client.set_terminated(run.info.run_id)
        print(run.info.run_id)


if __name__ == "__main__":
    main()
