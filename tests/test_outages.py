"""Nothing lost when a dependency blinks: a stack on its own PostgreSQL server and Redis, which
these tests stop and restart while jobs train and wait (the compose stack's shape)."""

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.services import (
    PostgresCluster,
    RedisServer,
    Stack,
    postgres_cluster,
    private_redis,
    running_stack,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.slow

TERMINAL = {"succeeded", "failed", "cancelled"}
SHORT_RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 3, "batch_size": 64}}
REPUBLISHED = "queued run(s); publishing"


def _long_run(epochs: int) -> dict[str, Any]:
    """Small batches: each epoch takes long enough to be hit while it trains."""
    return {"dataset": {"name": "digits"}, "training": {"epochs": epochs, "batch_size": 16}}


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with postgres_cluster() as running:
        yield running


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    cluster: PostgresCluster, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("outages"),
        database_url=cluster.url,
        broker_url=redis.url,
        sweep_interval_s="0.5",
        redispatch_after_s="3",
        lease_seconds="10",
        db_outage_s="120",
    ) as running:
        yield running


def _read(client: httpx.Client, path: str) -> Any:
    """An answer of the API, or None while it cannot answer (its database is away)."""
    try:
        response = client.get(path)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def _settled(client: httpx.Client, ids: list[str], *, timeout: float) -> list[dict[str, Any]]:
    """Every experiment of ``ids`` once all have ended."""

    def ended() -> list[dict[str, Any]] | None:
        bodies = [_read(client, f"/experiments/{experiment_id}") for experiment_id in ids]
        finished = all(body is not None and body["status"] in TERMINAL for body in bodies)
        return bodies if finished else None

    found: list[dict[str, Any]] = wait_for(ended, timeout=timeout, what=f"{len(ids)} to end")
    return found


def _running_with_epochs(client: httpx.Client, experiment_id: str, at_least: int) -> int:
    def ready() -> int | None:
        body = _read(client, f"/experiments/{experiment_id}")
        running = body is not None and body["status"] == "running"
        return body["epochs_done"] if running and body["epochs_done"] >= at_least else None

    done: int = wait_for(ready, timeout=180, what=f"{at_least} epochs trained")
    return done


def _one_training_and_some_waiting(
    client: httpx.Client, *, epochs: int, waiting: int
) -> tuple[str, list[str]]:
    """A long run that has trained two epochs, and ``waiting`` short ones queued behind it."""
    long_id: str = client.post("/experiments", json=_long_run(epochs)).json()["id"]
    _running_with_epochs(client, long_id, at_least=2)
    short_ids = [
        client.post("/experiments", json={**SHORT_RUN, "seed": seed}).json()["id"]
        for seed in range(waiting)
    ]
    return long_id, short_ids


def _assert_ran_once_each(
    client: httpx.Client, experiments: list[dict[str, Any]], stack: Stack
) -> None:
    """Each succeeded on its first attempt, and its history is epochs 1..N exactly once."""
    for experiment in experiments:
        assert experiment["status"] == "succeeded", (experiment, stack.log_tail())
        assert (experiment["attempts"], experiment["workers_lost"]) == (1, 0), experiment
        history = _read(client, f"/experiments/{experiment['id']}/history")
        epochs = [row["epoch"] for row in history["epochs"]]
        assert epochs == list(range(1, experiment["epochs_total"] + 1))


def _outage(
    cluster: PostgresCluster, seconds: float, meanwhile: Callable[[], None] = lambda: None
) -> float:
    """Stop the database for ``seconds``, calling ``meanwhile`` while it is down; returns when
    it was back (a monotonic time)."""
    cluster.stop()
    started = time.monotonic()
    try:
        meanwhile()
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    finally:
        cluster.start()
    return time.monotonic()


def test_postgres_stopped_10s_with_one_running_and_ten_queued_loses_nothing(
    stack: Stack, cluster: PostgresCluster
) -> None:
    with stack.client() as client:
        long_id, short_ids = _one_training_and_some_waiting(client, epochs=20, waiting=10)
        at_stop = _read(client, f"/experiments/{long_id}")
        assert at_stop["status"] == "running"
        answers: list[httpx.Response] = []
        back = _outage(
            cluster,
            10,
            meanwhile=lambda: answers.extend(
                [client.get(f"/experiments/{long_id}"), client.post("/experiments", json=SHORT_RUN)]
            ),
        )
        for answer in answers:  # while the database is away: a sentence, not a traceback
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "5"
            assert answer.json()["detail"].startswith("The database cannot be reached")
        _running_with_epochs(client, long_id, at_least=at_stop["epochs_done"] + 1)
        print(f"\nrecovery: training went on {time.monotonic() - back:.1f} s after a 10 s outage")
        experiments = _settled(client, [long_id, *short_ids], timeout=600)
        _assert_ran_once_each(client, experiments, stack)
    assert "Training crashed" not in stack.log_text()


def test_three_outages_during_one_run_cost_it_nothing(
    stack: Stack, cluster: PostgresCluster
) -> None:
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=_long_run(40)).json()["id"]
        trained = _running_with_epochs(client, experiment_id, at_least=1)
        for _ in range(3):
            back = _outage(cluster, 3)
            trained = _running_with_epochs(client, experiment_id, at_least=trained + 1)
            print(f"\nrecovery: training went on {time.monotonic() - back:.1f} s after 3 s")
        _assert_ran_once_each(client, _settled(client, [experiment_id], timeout=600), stack)


def test_redis_restarted_empty_with_jobs_queued_runs_each_once(
    stack: Stack, redis: RedisServer
) -> None:
    with stack.client() as client:
        long_id, short_ids = _one_training_and_some_waiting(client, epochs=20, waiting=5)
        published = stack.log_text().count(REPUBLISHED)
        redis.stop()
        redis.start()  # empty: the five messages are gone
        back = time.monotonic()
        wait_for(
            lambda: stack.log_text().count(REPUBLISHED) > published,
            timeout=120,
            what="the lost messages to be published again",
        )
        print(f"\nrecovery: lost messages published again {time.monotonic() - back:.1f} s after")
        experiments = _settled(client, [long_id, *short_ids], timeout=600)
        _assert_ran_once_each(client, experiments, stack)


def test_a_worker_killed_between_taking_a_message_and_claiming_its_run_loses_nothing(
    stack: Stack, cluster: PostgresCluster
) -> None:
    for worker in stack.workers:
        stop_process(worker)
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=SHORT_RUN).json()["id"]
        cluster.stop()
        try:
            # A worker that cannot claim gives its message back after db_outage_s, and takes
            # it again: it is killed while it holds the message, unclaimed.
            taker = stack.start_worker(db_outage_s="2")
            handed_back = f"while claiming the next run ({experiment_id})"
            wait_for(
                lambda: (
                    stack.log_text().count(handed_back) >= 2
                    and "message handed back" in stack.log_text()
                ),
                timeout=120,
                what="the worker to hand the message back and take it again",
            )
            os.killpg(taker.pid, signal.SIGKILL)
            taker.wait(timeout=10)
        finally:
            cluster.start()
        back = time.monotonic()
        stack.start_worker()
        experiments = _settled(client, [experiment_id], timeout=300)
        print(f"\nrecovery: the unclaimed run ended {time.monotonic() - back:.1f} s after")
        _assert_ran_once_each(client, experiments, stack)
