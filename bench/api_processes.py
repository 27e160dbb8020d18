"""Benchmark 7: history reads while a worker trains on the same machine, from one API process
and from ``--processes`` (uvicorn ``--workers``), side by side. Both APIs serve one database
holding ``--experiments`` finished experiments x ``--epochs`` epochs, with a private Redis as
the broker; a worker on this machine (started at ``CONVLAB_WORKER_NICE`` = the first of
``--nice``) trains the base model on a CIFAR-10-shaped archive the whole time. wrk drives
``GET /experiments/{id}/history`` (a random experiment per request) at ``--connections``, with
a token, as on the compose stack (auth on; each read is counted against the user's limit, set
far above what wrk reaches); ``--tokens both`` adds the same APIs with auth off, to weigh what
a token costs.

Every round measures every condition, in an order reversed every other round (ABBA), so that
the machine's swings fall on all alike: each API with the training process stopped (SIGSTOP:
the idle baseline) and with it training at each niceness of ``--nice`` (its threads reniced in
place; a niceness below the worker's needs root). Prints each run and the medians of
requests/s, p50 and p99.

    python bench/api_processes.py [--processes 2] [--connections 64] [--rounds 4] [--seconds 6]
                                  [--nice 10 0] [--database postgresql] [--experiments 1000]
                                  [--epochs 50] [--tokens with|without|both]
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from pathlib import Path

import queries
from common import (
    base_spec,
    cifar_shaped,
    median,
    redis_server,
    running_stack,
    show,
    wait_for,
)
from queries import populate, row_of, wrk

from store.db import get_engine, session_scope
from store.tables import Experiment
from tests.services import API_COMMAND, Stack, postgres_database, stop_process, wait_for_status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="API processes to compare")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--nice", type=int, nargs="+", default=[10, 0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--images", type=int, default=5000, help="training pictures")
    parser.add_argument("--tokens", choices=["with", "without", "both"], default="with")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    queries.CONCURRENCY = args.connections
    commands = {
        "1 process": API_COMMAND,
        f"{args.processes} processes": f"{API_COMMAND} --workers {args.processes}",
    }
    auth = {"with": [True], "without": [False], "both": [True, False]}[args.tokens]
    apis = {
        f"{name}{'' if on else ', no token'}": (command, on)
        for on in auth
        for name, command in commands.items()
    }
    conditions = [IDLE, *(f"training at nice {nice}" for nice in args.nice)]
    figures: dict[tuple[str, str], list[dict[str, float]]] = {
        (condition, api): [] for condition in conditions for api in apis
    }
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        data_dir = cifar_shaped(folder / "data", args.images)
        postgres = stack.enter_context(
            postgres_database() if args.database == "postgresql" else nullcontext(None)
        )
        url = postgres or f"sqlite:///{folder / 'convlab.sqlite'}"
        broker = stack.enter_context(redis_server())
        ids, _ = populate(url, args.experiments, args.epochs)
        paths = [f"/experiments/{i}/history" for i in ids]
        settings = {
            "database_url": url,
            "broker_url": broker,
            "data_dir": str(data_dir),
            "max_reads_per_minute": str(10**9),
        }
        stacks: dict[str, Stack] = {}
        for name, (command, on) in apis.items():
            home = folder / name.replace(" ", "_").replace(",", "")
            stacks[name] = stack.enter_context(
                running_stack(
                    home, api_command=command, workers=0, auth=str(on).lower(), **settings
                )
            )
        token = next(iter(stacks.values())).token("bench")  # one database: valid on every API
        tokens = {name: token if on else None for name, (_, on) in apis.items()}
        for name, running in stacks.items():  # warm up (every process: wrk spreads over them)
            wrk(running.url, paths, 3, tokens[name])
        trainer = _train(stack, next(iter(stacks.values())), args.nice[0], token)
        for round_number in range(1, args.rounds + 1):
            forward = round_number % 2 == 1
            for condition in conditions if forward else reversed(conditions):
                with _condition(trainer, condition):
                    turns = list(stacks.items())
                    for name, running in turns if forward else reversed(turns):
                        figures[condition, name].append(
                            wrk(running.url, paths, args.seconds, tokens[name])
                        )
                        row = row_of(f"{condition}, {name}", figures[condition, name][-1])
                        print(round_number, *row, flush=True)
    medians = {
        key: {stat: median([run[stat] for run in runs]) for stat in ("rps", "p50", "p99")}
        for key, runs in figures.items()
    }
    show(
        f"history reads at {args.connections} connections, 1 API process against "
        f"{args.processes}: {args.database}, {args.experiments} experiments x {args.epochs} "
        f"epochs, {args.rounds} rounds of {args.seconds} s each, medians "
        "(target: p99 <= 50 ms while training, on the lab profile)",
        [row_of(f"{condition}, {api}", values) for (condition, api), values in medians.items()],
    )


IDLE = "training stopped"


def _train(stack: ExitStack, api: Stack, nice: int, token: str) -> int:
    """Start a worker at ``nice`` training a long job (cancelled and stopped when ``stack``
    closes); once it has finished an epoch, the training process's pid."""
    worker = api.start_worker(worker_nice=str(nice))
    stack.callback(stop_process, worker)
    client = stack.enter_context(api.client(token))
    created = client.post("/experiments", json=base_spec(epochs=1000, batch_size=256))
    created.raise_for_status()
    experiment_id = created.json()["id"]
    stack.callback(lambda: client.post(f"/experiments/{experiment_id}/cancel"))
    wait_for_status(client, experiment_id, {"running"}, timeout=300)
    wait_for(
        lambda: client.get(f"/experiments/{experiment_id}").json()["epochs_done"] >= 1,
        timeout=600,
        what="the first epoch",
    )
    with session_scope(get_engine(api.env["CONVLAB_DATABASE_URL"])) as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None and experiment.lease_owner is not None
        pid = int(experiment.lease_owner.rsplit("/", 2)[1])
    threads = len(os.listdir(f"/proc/{pid}/task"))
    print(f"-- training process {pid}: {threads} threads at niceness {_niceness(pid)}")
    return pid


@contextmanager
def _condition(pid: int, condition: str) -> Iterator[None]:
    """The training process stopped for the block (``IDLE``), or running at the niceness the
    condition names."""
    if condition == IDLE:
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)
        return
    nice = int(condition.rsplit(" ", 1)[1])
    for thread in os.listdir(f"/proc/{pid}/task"):
        with suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(thread), nice)
    assert _niceness(pid) == {nice}, f"the training process runs at {_niceness(pid)}"
    yield


def _niceness(pid: int) -> set[int]:
    """The nicenesses the threads of process ``pid`` run at."""
    found = set()
    for thread in os.listdir(f"/proc/{pid}/task"):
        with suppress(OSError):
            found.add(os.getpriority(os.PRIO_PROCESS, int(thread)))
    return found


if __name__ == "__main__":
    sys.exit(main())
