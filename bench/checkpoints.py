"""Checkpoint bytes per minute of training: the base network on a few CIFAR-shaped pictures (so
epochs are short, as on a GPU, while each checkpoint is full size), trained once per
``CONVLAB_CHECKPOINT_SECONDS`` setting (0: a checkpoint every epoch, the old way) against a
private PostgreSQL server, one setting after another in the same run.

    python bench/checkpoints.py [--settings 0 30 5] [--images 500] [--train-seconds 35]

Per setting a fresh worker (that setting) joins the stack, trains a three-epoch warm-up job and
then the measured job. What the database received is read from PostgreSQL itself: the WAL it
wrote during the job (``pg_current_wal_insert_lsn()`` before and after), and the checkpoints
written (count and bytes, logged by a trigger the benchmark adds to the checkpoints table).
Rates divide by the training time, the sum of the history's per-epoch ``seconds``. The first
warm-up job times an epoch (its epochs 2+); the measured jobs train enough epochs for
``--train-seconds``, the same for every setting, and their histories must agree epoch for
epoch.
"""

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from common import (
    base_spec,
    cifar_shaped,
    median,
    redis_server,
    run_convlab,
    running_stack,
    show,
)
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from tests.services import Stack, postgres_cluster, stop_process

MB = 1e6
LOG_WRITES = [
    """CREATE TABLE bench_checkpoint_writes (
        experiment_id text NOT NULL, epoch integer NOT NULL, bytes bigint NOT NULL)""",
    """CREATE FUNCTION bench_log_checkpoint() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO bench_checkpoint_writes
            VALUES (NEW.experiment_id, NEW.epoch, octet_length(NEW.data));
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER bench_log_checkpoint AFTER INSERT OR UPDATE ON checkpoints
        FOR EACH ROW EXECUTE FUNCTION bench_log_checkpoint()""",
]


@dataclass
class Measured:
    """One measured job."""

    setting: float
    epochs: list[dict[str, Any]]
    wall_s: float
    wal_bytes: int
    checkpoints: int
    checkpoint_bytes: int

    @property
    def train_s(self) -> float:
        return sum(float(epoch["seconds"]) for epoch in self.epochs)

    @property
    def outside_s(self) -> float:
        """Wall seconds not in an epoch: start-up, compile, checkpoints, the end."""
        return self.wall_s - self.train_s

    def per_minute(self, count: float) -> float:
        return count * 60 / self.train_s


def wal_position(engine: Engine) -> int:
    """Where PostgreSQL's WAL insert position stands, in bytes."""
    with engine.connect() as connection:
        lsn = connection.execute(text("SELECT pg_current_wal_insert_lsn()::text")).scalar_one()
    high, low = (int(part, 16) for part in lsn.split("/"))
    return (high << 32) + low


def writes_of(engine: Engine, experiment_id: str) -> tuple[int, int]:
    """Checkpoints written for the experiment, and their bytes, as the trigger logged them."""
    query = text(
        "SELECT count(*), coalesce(sum(bytes), 0) FROM bench_checkpoint_writes"
        " WHERE experiment_id = :id"
    )
    with engine.connect() as connection:
        count, total = connection.execute(query, {"id": experiment_id}).one()
    return int(count), int(total)


def history(client: httpx.Client, experiment_id: str) -> list[dict[str, Any]]:
    epochs: list[dict[str, Any]] = client.get(f"/experiments/{experiment_id}/history").json()[
        "epochs"
    ]
    return epochs


def measure(
    stack: Stack, engine: Engine, setting: float, body: dict[str, Any], epochs: int | None
) -> tuple[Measured | None, float]:
    """Start a worker with ``setting``, warm it, train ``epochs`` (none: only the warm-up).

    Returns the measured job (if any) and the warm-up's median epoch seconds."""
    started = time.perf_counter()
    worker = stack.start_worker(checkpoint_seconds=str(setting))
    try:
        with stack.client() as client:
            _, warm = run_convlab(client, {**body, "training": {**body["training"], "epochs": 3}})
            epoch_s = median([float(row["seconds"]) for row in history(client, warm["id"])[1:]])
            progress(
                f"setting {setting:g} s: worker warm after {time.perf_counter() - started:.0f} s"
            )
            if epochs is None:
                return None, epoch_s
            job = {**body, "training": {**body["training"], "epochs": epochs}}
            time.sleep(1)  # let the warm-up's last writes land
            before = wal_position(engine)
            wall, experiment = run_convlab(client, job)
            after = wal_position(engine)
            count, total = writes_of(engine, experiment["id"])
            rows = history(client, experiment["id"])
            progress(f"setting {setting:g} s: {epochs} epochs in {wall:.0f} s")
    finally:
        stop_process(worker)
    return Measured(setting, rows, wall, after - before, count, total), epoch_s


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def same_history(runs: list[Measured]) -> str:
    """'identical', or where the first run's val_accuracy and another's first differ."""
    first = runs[0]
    for run in runs[1:]:
        ours = [epoch["val_accuracy"] for epoch in first.epochs]
        theirs = [epoch["val_accuracy"] for epoch in run.epochs]
        if ours != theirs:
            where = next(
                (i + 1 for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
                min(len(ours), len(theirs)) + 1,
            )
            return (
                f"DIFFER: setting {run.setting:g} from epoch {where} "
                f"({len(ours)} vs {len(theirs)} epochs)"
            )
    return f"identical, {len(first.epochs)} epochs, val_accuracy of each"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", type=float, nargs="+", default=[0, 30, 5])
    parser.add_argument("--images", type=int, default=500, help="training pictures")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-seconds", type=float, default=35, help="per measured job")
    parser.add_argument("--epochs", type=int, help="fix the epochs instead of timing one")
    args = parser.parse_args()
    body = base_spec(1, args.batch_size)
    runs: list[Measured] = []
    with (
        tempfile.TemporaryDirectory() as folder,
        postgres_cluster() as cluster,
        redis_server() as broker,
    ):
        data = cifar_shaped(Path(folder) / "data", args.images)
        engine = create_engine(cluster.url, poolclass=NullPool)
        settings = {"database_url": cluster.url, "broker_url": broker, "data_dir": str(data)}
        with running_stack(Path(folder) / "home", workers=0, **settings) as stack:
            with engine.begin() as connection:  # the API has migrated the database
                for statement in LOG_WRITES:
                    connection.execute(text(statement))
            epochs = args.epochs
            epoch_s = 0.0
            for setting in args.settings:
                if epochs is None:  # time an epoch on the first worker, then fix the epochs
                    _, epoch_s = measure(stack, engine, setting, body, None)
                    epochs = max(3, math.ceil(args.train_seconds / epoch_s))
                run, _ = measure(stack, engine, setting, body, epochs)
                assert run is not None
                runs.append(run)
        engine.dispose()
    report(args, runs, epoch_s)


def report(args: argparse.Namespace, runs: list[Measured], epoch_s: float) -> None:
    old = runs[0]
    rows = [("warm-up epoch s (median, epochs 2+)", f"{epoch_s:.3f}")] if epoch_s else []
    for run in runs:
        name = f"setting {run.setting:g} s"
        size = run.checkpoint_bytes / run.checkpoints / MB if run.checkpoints else 0.0
        rows += [
            (
                f"{name}: training s / wall s",
                f"{run.train_s:.1f} / {run.wall_s:.1f}   (outside epochs {run.outside_s:.1f})",
            ),
            (
                f"{name}: checkpoints written",
                f"{run.checkpoints} of {len(run.epochs)} epochs ({size:.2f} MB each)",
            ),
            (f"{name}: checkpoint MB/min", f"{run.per_minute(run.checkpoint_bytes) / MB:.1f}"),
            (f"{name}: WAL MB/min", f"{run.per_minute(run.wal_bytes) / MB:.1f}"),
        ]
    for run in runs[1:]:
        ratio = old.per_minute(old.wal_bytes) / run.per_minute(run.wal_bytes)
        rows.append((f"WAL/min, {old.setting:g} s over {run.setting:g} s", f"x{ratio:.1f}"))
    rows.append(("histories", same_history(runs)))
    show(
        f"checkpoints: base preset, {args.images} CIFAR-shaped images, batch "
        f"{args.batch_size}, {len(old.epochs)} epochs, PostgreSQL",
        rows,
    )


if __name__ == "__main__":
    main()
