"""Queued reads: what ``GET /experiments/{id}`` of a queued run costs with 10 and with 5,000
runs queued, side by side. Each queue is its own SQLite database (four users' runs, two of
them running, a live worker, timed epochs, so the forecast places and times every run),
served in this process (FastAPI's TestClient: the CPU time measured is the read's and the
client's, the same on both sides); rounds alternate between the two. For scale, what one
forecast of each queue costs made afresh: what every such read cost before reads were served
the forecast an API process made last (``jobs.forecast.Forecasts``).

    python bench/queued_reads.py [--small 10] [--large 5000] [--reads 300] [--rounds 5]
"""

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from common import show
from fastapi.testclient import TestClient

from api.main import create_app
from core.config import Settings
from jobs.forecast import forecast
from models.accelerator import CPU
from models.presets import resolve
from store.db import get_engine, migrate, session_scope
from store.experiments import create_experiment
from store.workers import beat
from tests.services import Trainer

USERS = ("alice", "bob", "carol", "dave")


def populate(settings: Settings, queued: int) -> list[str]:
    """Two running runs with timed epochs, a live worker, and ``queued`` runs waiting; the
    ids of those waiting."""
    engine = get_engine(settings.resolved_database_url)
    migrate(engine)
    spec = resolve("base", {"dataset": {"name": "digits"}, "training": {"epochs": 5}})
    body = spec.model_dump(mode="json")
    with session_scope(engine) as session:
        running = [create_experiment(session, name=None, spec=body, owner=u) for u in USERS[:2]]
        waiting = [
            create_experiment(session, name=None, spec=body, owner=USERS[i % len(USERS)])
            for i in range(queued)
        ]
        running_ids = [run.id for run in running]
        waiting_ids = [run.id for run in waiting]
    trainer = Trainer(settings)
    beat(engine, trainer.owner, host="bench", pid=0, accelerator=CPU)
    for run_id in running_ids:
        trainer.start(run_id)
        for epoch in (1, 2, 3):
            trainer.epoch(run_id, epoch, 1.0, 0.5, 1.1, 0.45, 0.8)
    engine.dispose()
    return waiting_ids


def read_cost_ms(client: TestClient, ids: list[str], reads: int, rng: random.Random) -> float:
    """CPU milliseconds per read of a random queued run."""
    started = time.process_time()
    for _ in range(reads):
        answer = client.get(f"/experiments/{rng.choice(ids)}")
        assert answer.json()["queue_position"] is not None, answer.text
    return (time.process_time() - started) * 1000 / reads


def forecast_ms(settings: Settings) -> float:
    """CPU milliseconds of one forecast made afresh (the median of five)."""
    engine = get_engine(settings.resolved_database_url)
    costs = []
    for _ in range(5):
        with session_scope(engine) as session:
            started = time.process_time()
            forecast(session, seen_within_s=settings.workers_seen_s)
            costs.append((time.process_time() - started) * 1000)
    return statistics.median(costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as folder:
        sizes = (args.small, args.large)
        settings = {size: Settings(home=Path(folder) / str(size)) for size in sizes}
        ids = {size: populate(settings[size], size) for size in sizes}
        costs: dict[int, list[float]] = {size: [] for size in sizes}
        with (
            TestClient(create_app(settings[args.small])) as small,
            TestClient(create_app(settings[args.large])) as large,
        ):
            clients = {args.small: small, args.large: large}
            for size in sizes:  # warm: imports, connections, the first forecast
                read_cost_ms(clients[size], ids[size], 20, rng)
            for _ in range(args.rounds):
                for size in sizes:
                    costs[size].append(read_cost_ms(clients[size], ids[size], args.reads, rng))
        afresh = {size: forecast_ms(settings[size]) for size in sizes}
    per_read = {size: statistics.median(costs[size]) for size in sizes}
    rows = [
        (f"read of a queued run, {size} queued", f"{per_read[size]:.2f} ms CPU") for size in sizes
    ]
    rows.append(
        (
            f"ratio {args.large} / {args.small}",
            f"x{per_read[args.large] / per_read[args.small]:.2f}",
        )
    )
    rows += [
        (f"one forecast made afresh, {size} queued", f"{afresh[size]:.1f} ms CPU") for size in sizes
    ]
    show(f"Queued reads ({args.rounds} rounds of {args.reads} reads each side, medians)", rows)


if __name__ == "__main__":
    main()
