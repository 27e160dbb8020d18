"""Fair share and priorities: the run a worker starts is chosen in the database when it claims
(higher priority first; within one, the user with the fewest runs going, then the one served
longest ago), whatever message woke it; queued runs say their place and when they should start."""

import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

import jobs.forecast as forecasting
from models.accelerator import Accelerator
from models.status import Priority, Status
from store.db import session_scope
from store.experiments import create_experiment
from store.queue import Line, read_line
from store.tables import EpochRecord, Experiment, utcnow
from store.transitions import claim_next, finish
from store.workers import attempts_of, beat
from tests.services import Stack, running_stack, wait_for, wait_for_status

SPEC = {"preset": "base", "dataset": {"name": "digits"}, "training": {"epochs": 2}}
GPU = Accelerator("Test GPU", 1024)


def _queue(engine: Engine, *runs: tuple[str | None, Priority]) -> list[str]:
    """Queued runs of these (owner, priority), one second apart in submission order."""
    start = utcnow() - timedelta(hours=1)
    with session_scope(engine) as session:
        made = []
        for offset, (owner, priority) in enumerate(runs):
            experiment = create_experiment(
                session, name=None, spec=SPEC, owner=owner, priority=priority
            )
            experiment.created_at = start + timedelta(seconds=offset)
            made.append(experiment.id)
    return made


def _owners_in_claim_order(engine: Engine, count: int, worker: str = "host/1/1") -> list[str]:
    """Claim and finish ``count`` runs one at a time, as one worker would: whose each was."""
    owners = []
    for _ in range(count):
        claimed = claim_next(engine, "0" * 32, worker, lease_seconds=60, max_lost=3)
        assert claimed is not None
        owners.append(f"{claimed.experiment.owner}:{claimed.experiment.priority}")
        finish(engine, claimed.experiment.id, worker, Status.succeeded)
    return owners


def test_users_take_turns_within_a_priority_whatever_they_submitted_first(engine: Engine) -> None:
    _queue(
        engine,
        *[("alice", Priority.normal)] * 4,
        ("bob", Priority.normal),
        ("carol", Priority.normal),
    )
    order = _owners_in_claim_order(engine, 6)
    turns = ["alice", "bob", "carol", "alice", "alice", "alice"]
    assert order == [f"{owner}:normal" for owner in turns]


def test_higher_priority_starts_first_and_low_waits_for_normal(engine: Engine) -> None:
    _queue(engine, ("alice", Priority.low), ("bob", Priority.normal), ("carol", Priority.high))
    assert _owners_in_claim_order(engine, 3) == ["carol:high", "bob:normal", "alice:low"]


def test_the_user_with_fewer_runs_going_is_served_first(engine: Engine) -> None:
    _queue(engine, ("alice", Priority.normal), ("alice", Priority.normal))
    claim_next(engine, "0" * 32, "host/1/1", lease_seconds=60, max_lost=3)  # alice: one going
    _queue(engine, ("bob", Priority.normal))  # submitted last, but bob has none going
    claimed = claim_next(engine, "0" * 32, "host/2/2", lease_seconds=60, max_lost=3)
    assert claimed is not None and claimed.experiment.owner == "bob"


def test_each_attempt_records_its_worker_and_accelerator(engine: Engine) -> None:
    [run] = _queue(engine, ("alice", Priority.normal))
    claimed = claim_next(engine, run, "host/7/7", lease_seconds=60, max_lost=3, accelerator=GPU)
    assert claimed is not None and claimed.experiment.id == run
    again = claim_next(engine, run, "host/7/7", lease_seconds=60, max_lost=3)  # an answer lost
    assert again is not None and again.experiment.attempts == 2
    with session_scope(engine) as session:
        attempts = attempts_of(session, [run])[run]
    assert [(a.number, a.worker, a.accelerator, a.accelerator_memory_mb) for a in attempts] == [
        (1, "host/7/7", "Test GPU", 1024),
        (2, "host/7/7", None, None),
    ]


def test_workers_claiming_at_once_never_take_one_run_twice(engine: Engine) -> None:
    _queue(engine, *[(owner, Priority.normal) for owner in ("alice", "bob") * 6])
    taken: list[str] = []
    barrier = threading.Barrier(6)

    def work(number: int) -> None:
        barrier.wait()
        for _ in range(2):
            claimed = claim_next(engine, "0" * 32, f"host/{number}/1", lease_seconds=60, max_lost=3)
            assert claimed is not None
            taken.append(claimed.experiment.id)
            finish(engine, claimed.experiment.id, f"host/{number}/1", Status.succeeded)

    threads = [threading.Thread(target=work, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == len(set(taken)) == 12
    with session_scope(engine) as session:
        assert set(session.exec(select(Experiment.status)).all()) == {Status.succeeded}


# Against a running API and one worker, with tokens.

LONG = {"dataset": {"name": "digits"}, "training": {"epochs": 60, "batch_size": 16}}
SHORT = {"dataset": {"name": "digits"}, "training": {"epochs": 2, "batch_size": 16}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("fair")
    with running_stack(home, workers=1, auth="true", lease_seconds="6") as running:
        yield running


def _token(client: httpx.Client) -> str:
    return client.headers["Authorization"].removeprefix("Bearer ")


def _submit(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/experiments", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_a_second_users_run_starts_second_and_queue_places_fall(stack: Stack) -> None:
    alice, bob = stack.client(stack.token("alice")), stack.client(stack.token("bob"))
    admin = stack.client(stack.token("root", "--admin"))
    busy = _submit(alice, {**LONG, "name": "busy"})
    wait_for(  # a few timed epochs of the same spec: the queue's pace
        lambda: alice.get(f"/experiments/{busy}").json()["epochs_done"] >= 3,
        timeout=180,
        what="the first run's epochs",
    )
    alices = [_submit(alice, LONG) for _ in range(3)]
    bobs = _submit(bob, LONG)
    refused = bob.post("/experiments", json={**SHORT, "priority": "high"})
    assert refused.status_code == 403
    assert "Only an admin may submit at priority high" in refused.json()["detail"]

    places = {run: alice.get(f"/experiments/{run}").json() for run in alices} | {
        bobs: bob.get(f"/experiments/{bobs}").json()
    }
    assert [places[run]["queue_position"] for run in (bobs, *alices)] == [1, 2, 3, 4]
    etas = [places[run]["eta_seconds"] for run in (bobs, *alices)]
    assert all(eta is not None and eta > 0 for eta in etas), etas
    assert etas == sorted(etas) and etas[0] < etas[-1]
    running = alice.get(f"/experiments/{busy}").json()
    assert (running["queue_position"], running["eta_seconds"]) == (None, None)
    [attempt] = running["attempt_log"]
    assert attempt["worker"] == running["worker"]
    assert attempt["accelerator"] == {"name": "cpu", "memory_mb": None}

    listed = stack.convlab("ls", "--status", "queued", CONVLAB_TOKEN=_token(admin)).stdout
    line_of = {run: next(line for line in listed.splitlines() if run in line) for run in places}
    assert re.search(r"#1, ~\d+[ms]", line_of[bobs]) and "#4" in line_of[alices[-1]], listed
    cli = stack.convlab(
        "submit", "--priority", "high", "--set", "dataset.name=digits", CONVLAB_TOKEN=_token(bob)
    )
    assert cli.returncode == 1 and "Only an admin may submit at priority high" in cli.stderr

    urgent = _submit(admin, {**SHORT, "priority": "high"})
    assert admin.get(f"/experiments/{urgent}").json()["queue_position"] == 1
    assert bob.get(f"/experiments/{bobs}").json()["queue_position"] == 2

    alice.post(f"/experiments/{busy}/cancel")
    wait_for_status(admin, urgent, {"succeeded"}, timeout=180)
    started = wait_for_status(bob, bobs, {"running"}, timeout=180)
    assert (
        started["attempt_log"][0]["started_at"]
        > admin.get(f"/experiments/{urgent}").json()["started_at"]
    )
    later = [alice.get(f"/experiments/{run}").json() for run in alices]
    assert [run["status"] for run in later] == ["queued"] * 3  # bob's went second, not fifth
    assert [run["queue_position"] for run in later] == [1, 2, 3]
    for run in [bobs, *alices]:
        (bob if run == bobs else alice).post(f"/experiments/{run}/cancel")
    for client in (alice, bob, admin):
        client.close()


def test_reads_of_queued_runs_share_one_forecast(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = client.app.state.engine
    runs = _queue(engine, *[("alice", Priority.normal)] * 20, *[("bob", Priority.normal)] * 20)
    made = []

    def counted(session: Session) -> Line:
        made.append(time.monotonic())
        return read_line(session)

    monkeypatch.setattr(forecasting, "read_line", counted)  # the real one, counted
    started = time.monotonic()
    places = [client.get(f"/experiments/{run}").json()["queue_position"] for run in runs]
    reads_took = time.monotonic() - started
    assert sorted(places) == list(range(1, 41))
    assert len(made) <= 1 + reads_took / forecasting.FRESH_S  # not one forecast per read

    made.clear()
    new = client.post("/experiments", json=SPEC).json()  # one more queued: forecast again
    assert new["queue_position"] is not None and len(made) == 1
    client.post(f"/experiments/{runs[0]}/cancel")  # one fewer: forecast again
    shown = client.get(f"/experiments/{runs[-1]}").json()["queue_position"]
    assert len(made) == 2
    client.post(f"/experiments/{runs[1]}/cancel")  # one fewer and one more: the same counts,
    again = client.post("/experiments", json=SPEC).json()  # but a run the forecast lacks
    assert again["queue_position"] is not None and len(made) == 3
    with session_scope(engine) as session:
        assert shown == forecasting.forecast(session, seen_within_s=60)[runs[-1]].position


def test_a_user_at_the_running_cap_waits_in_the_forecast_for_their_own_run_to_end(
    engine: Engine,
) -> None:
    """Two workers busy, alice's run 10 epochs from its end and bob's 2; alice's queued run
    comes first in fair share, but at a cap of 1 it must wait for her running one."""
    for worker in ("host/1/1", "host/2/2"):
        beat(engine, worker, host="host", pid=int(worker[-1]), accelerator=Accelerator("cpu", None))
    long = {**SPEC, "training": {"epochs": 10}}
    with session_scope(engine) as session:
        timed = create_experiment(session, name=None, spec=SPEC, owner="carol")
        timed.status = Status.succeeded
        session.flush()
        session.add(EpochRecord(experiment_id=timed.id, epoch=2, loss=1, accuracy=0, seconds=3.0))
    running = []
    for owner, spec, worker in (("alice", long, "host/1/1"), ("bob", SPEC, "host/2/2")):
        with session_scope(engine) as session:
            create_experiment(session, name=None, spec=spec, owner=owner)
        claimed = claim_next(engine, "0" * 32, worker, lease_seconds=60, max_lost=3)
        assert claimed is not None
        running.append(claimed.experiment.id)
    alices, bobs = _queue(engine, ("alice", Priority.normal), ("bob", Priority.normal))

    def places(cap: int | None, *runs: str) -> list[tuple[int | None, float | None]]:
        with session_scope(engine) as session:
            made = forecasting.forecast(session, seen_within_s=60, max_running_per_user=cap)
        return [(made[run].position, made[run].eta_seconds) for run in runs]

    assert places(None, alices, bobs) == [(1, 6.0), (2, 12.0)]  # alice's where bob's ends
    assert places(1, alices, bobs) == [(2, 30.0), (1, 6.0)]  # alice's waits for her own
    assert places(2, alices, bobs) == places(None, alices, bobs)

    finish(engine, running[1], "host/2/2", Status.succeeded)  # a worker free, bob's queued
    with session_scope(engine) as session:  # run gone: only alice, at the cap, waits
        session.get_one(Experiment, bobs).status = Status.cancelled
    assert places(None, alices) == [(1, 0.0)]
    assert places(1, alices) == [(1, 30.0)]  # the free worker idles until hers ends
