"""Slots and the running cap, with real workers: a worker with two slots trains two runs at once
in two training processes, killing one of them loses only its own run's epoch in progress, and
a user's running runs never exceed ``CONVLAB_MAX_RUNNING_PER_USER`` however many workers claim
at once (PostgreSQL)."""

import os
import re
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import col, func, select

from core.config import Settings
from models.status import Status
from store.db import get_engine, migrate, session_scope
from store.experiments import create_experiment
from store.tables import Experiment
from tests.services import (
    Stack,
    all_at_once,
    postgres_database,
    running_stack,
    server_stack,
    wait_for,
    wait_for_status,
)
from worker.slots import memory_share_mb, slot_count, take_slot

pytestmark = pytest.mark.slow

TERMINAL = {"succeeded", "failed", "cancelled"}
EPOCHS = 8
RUN = {"dataset": {"name": "digits"}, "training": {"epochs": EPOCHS, "batch_size": 16}}
FAST = {"sweep_interval_s": "0.5", "lease_seconds": "10", "checkpoint_seconds": "0"}


@pytest.fixture(scope="module")
def two_slots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("slots")
    with running_stack(home, workers=1, jobs_per_gpu="2", **FAST) as stack:
        yield stack


@pytest.mark.parametrize(
    ("jobs", "override", "expected"),
    [(1, None, None), (4, None, 81559 // 4 - 500), (8, None, 81559 // 8 - 500), (4, 3000, 3000)],
)
def test_each_slot_takes_its_share_of_its_gpus_memory(
    jobs: int, override: int | None, expected: int | None
) -> None:
    settings = Settings(jobs_per_gpu=jobs, gpu_memory_per_job_mb=override)
    assert memory_share_mb(settings, 81559) == expected  # an H100's memory, as NVML reports it


def test_slots_fill_gpu_by_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    settings = Settings(jobs_per_gpu=2)
    assert slot_count(settings) == 4
    pinned = []
    for index in range(4):
        monkeypatch.setattr("worker.slots._pool_index", lambda index=index: index)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
        slot = take_slot(settings)
        pinned.append((slot.index, slot.gpu, os.environ["CUDA_VISIBLE_DEVICES"]))
    assert pinned == [(0, "2", "2"), (1, "2", "2"), (2, "5", "5"), (3, "5", "5")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a CPU worker: its slots share the cores
    assert slot_count(settings) == 2
    assert take_slot(settings).gpu is None


def _submit(client: httpx.Client, body: dict[str, Any] = RUN) -> str:
    response = client.post("/experiments", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _experiment(client: httpx.Client, experiment_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/experiments/{experiment_id}").json()
    return body


def _epochs(client: httpx.Client, experiment_id: str) -> list[int]:
    rows = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
    return [int(row["epoch"]) for row in rows]


def _both_mid_run(client: httpx.Client, first: str, second: str) -> list[dict[str, Any]]:
    """Both runs seen running at one moment, each with some epochs done and some to go."""

    def mid_run() -> list[dict[str, Any]] | None:
        runs = [_experiment(client, first), _experiment(client, second)]
        going = all(run["status"] == "running" and 1 <= run["epochs_done"] < EPOCHS for run in runs)
        return runs if going else None

    found: list[dict[str, Any]] = wait_for(mid_run, timeout=180, what="both runs mid-run")
    return found


def _pid(run: dict[str, Any]) -> int:
    return int(run["worker"].split("/")[1])


def test_workers_lists_each_slot_and_what_it_holds(two_slots: Stack) -> None:
    with two_slots.client() as client:

        def both_slots() -> list[dict[str, Any]] | None:
            rows: list[dict[str, Any]] = client.get("/workers").json()
            return rows if len(rows) == 2 else None

        rows = wait_for(both_slots, timeout=60, what="two slots beating")
        assert sorted(row["slot"] for row in rows) == [0, 1]
        assert {row["slots"] for row in rows} == {2}
        assert {row["gpu_memory_limit_mb"] for row in rows} == {None}  # no GPU here
        assert {row["accelerator"]["name"] for row in rows} == {"cpu"}


def test_two_runs_train_at_once_in_two_processes_each_history_whole(two_slots: Stack) -> None:
    with two_slots.client() as client:
        first, second = _submit(client), _submit(client)
        running = _both_mid_run(client, first, second)  # epochs of each between the other's
        assert _pid(running[0]) != _pid(running[1])
        held = {row["experiment_id"] for row in client.get("/workers").json()}
        assert held == {first, second}
        for experiment_id in (first, second):
            done = wait_for_status(client, experiment_id, TERMINAL, timeout=300)
            assert done["status"] == "succeeded", two_slots.log_tail()
            assert _epochs(client, experiment_id) == list(range(1, EPOCHS + 1))
            assert (done["attempts"], done["workers_lost"]) == (1, 0)


def test_killing_one_slots_process_requeues_only_its_run(two_slots: Stack) -> None:
    with two_slots.client() as client:
        killed, other = _submit(client), _submit(client)
        running = {run["id"]: run for run in _both_mid_run(client, killed, other)}
        os.kill(_pid(running[killed]), signal.SIGKILL)
        for experiment_id in (killed, other):
            done = wait_for_status(client, experiment_id, TERMINAL, timeout=300)
            assert done["status"] == "succeeded", two_slots.log_tail()
            assert _epochs(client, experiment_id) == list(range(1, EPOCHS + 1))
        untouched = _experiment(client, other)
        assert (untouched["attempts"], untouched["workers_lost"]) == (1, 0)  # never left its slot
        resumed = _experiment(client, killed)
        assert (resumed["attempts"], resumed["workers_lost"]) == (2, 1)
    # Resumed from its checkpoint: after the epochs it had recorded, none of them trained again.
    resumes = re.findall(rf"experiment {killed} resumes after epoch (\d+)", two_slots.log_text())
    assert len(resumes) == 1 and int(resumes[0]) >= running[killed]["epochs_done"]


# The running cap, on PostgreSQL.

CAP = 2
STORED = {"preset": "base", **RUN}
"""A spec as the API stores it."""


def _most_at_once(runs: list[dict[str, Any]]) -> int:
    """The most of these runs that were running at one instant (a start at the instant of an
    end counts after it)."""
    events = sorted(
        [(datetime.fromisoformat(run["started_at"]), 1) for run in runs]
        + [(datetime.fromisoformat(run["finished_at"]), -1) for run in runs]
    )
    going = most = 0
    for _, step in events:
        going += step
        most = max(most, going)
    return most


def test_the_running_cap_holds_across_two_workers(tmp_path: Path) -> None:
    settings = {**FAST, "auth": "true", "max_running_per_user": str(CAP), "jobs_per_gpu": "2"}
    with server_stack(tmp_path, workers=2, **settings) as stack:
        alice, bob = stack.client(stack.token("alice")), stack.client(stack.token("bob"))
        with alice, bob:
            wait_for(lambda: len(alice.get("/workers").json()) == 4, timeout=60, what="4 slots")
            short = {**RUN, "training": {"epochs": 3, "batch_size": 16}}
            runs = [_submit(alice, short) for _ in range(2 * CAP)]
            wait_for(
                lambda: sum(_experiment(alice, run)["status"] == "running" for run in runs) == CAP,
                timeout=120,
                what="alice's first runs going",
            )
            late = _submit(bob, short)  # a free slot is there for another user's run
            assert wait_for_status(bob, late, TERMINAL, timeout=300)["status"] == "succeeded"
            done = [wait_for_status(alice, run, TERMINAL, timeout=300) for run in runs]
            assert {run["status"] for run in done} == {"succeeded"}, stack.log_tail()
        assert _most_at_once(done) == CAP


SLOW_CLAIMS = (
    "CREATE FUNCTION test_slow_claim() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$",
    "CREATE TRIGGER test_slow_claim AFTER UPDATE OF status ON experiments FOR EACH ROW "
    "WHEN (NEW.status = 'running') EXECUTE FUNCTION test_slow_claim()",
)
"""Each claim waits 0.3 s between its update and its commit: claims at the same instant overlap,
as they can on a loaded database."""


def test_claims_at_the_same_instant_never_exceed_the_cap(tmp_path: Path) -> None:
    with postgres_database() as url:
        engine = get_engine(url)
        migrate(engine)
        with session_scope(engine) as session:
            runs = [
                create_experiment(session, name=None, spec=STORED, owner="alice").id
                for _ in range(10)
            ]
        with engine.begin() as connection:
            for statement in SLOW_CLAIMS:
                connection.execute(text(statement))
        prepare = (
            "import os, random\n"
            "from store.db import get_engine\n"
            "from store.transitions import claim\n"
            f"engine = get_engine({url!r})\n"
            "engine.connect().close()\n"
        )
        act = (  # each process tries every run, in an order of its own: different rows at once
            f"for run in random.sample({runs!r}, {len(runs)}):\n"
            "    claim(engine, run, f'host/{os.getpid()}/1', lease_seconds=60, max_lost=3, "
            f"max_running_per_user={CAP})"
        )
        all_at_once(tmp_path, prepare, act, count=10)
        with session_scope(engine) as session:
            running = session.exec(
                select(func.count()).where(col(Experiment.status) == Status.running)
            ).one()
        engine.dispose()
    assert running == CAP
