"""Leases on the database's clock: a worker whose own clock is 90 s off (faketime) neither loses
a healthy run nor delays its takeover when it dies."""

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import (
    Stack,
    missing,
    postgres_database,
    redis_server,
    running_stack,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.slow

LEASE_SECONDS = 10
TERMINAL = {"succeeded", "failed", "cancelled"}
LONG_RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 60, "batch_size": 16}}


def _skewed(offset: str) -> str:
    """A command prefix that runs a worker with its wall clock ``offset`` off (its monotonic
    clock, which timeouts use, left alone)."""
    if shutil.which("faketime") is None:
        missing("faketime is not installed (Debian package faketime)")
    return f"env DONT_FAKE_MONOTONIC=1 faketime -f {offset}"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with (
        postgres_database() as database_url,
        redis_server() as broker_url,
        running_stack(
            tmp_path,
            workers=0,
            database_url=database_url,
            broker_url=broker_url,
            sweep_interval_s="0.5",
            lease_seconds=str(LEASE_SECONDS),
        ) as running,
    ):
        yield running


def _running_on(client: httpx.Client, experiment_id: str, machine: str) -> dict[str, Any]:
    def there() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/experiments/{experiment_id}").json()
        on_it = body["status"] == "running" and (body["worker"] or "").startswith(f"{machine}/")
        return body if on_it and body["epochs_done"] >= 1 else None

    found: dict[str, Any] = wait_for(there, timeout=180, what=f"a run on {machine}")
    return found


def test_a_worker_90s_behind_keeps_its_healthy_run(stack: Stack) -> None:
    stack.start_worker(_skewed("-90s"))
    with stack.client() as client:
        response = client.post("/experiments", json=LONG_RUN)
        done = wait_for_status(client, response.json()["id"], TERMINAL, timeout=300)
    assert done["status"] == "succeeded", stack.log_tail()
    assert (done["attempts"], done["workers_lost"]) == (1, 0), stack.log_tail()


def test_a_dead_worker_90s_ahead_is_taken_over_within_the_lease(stack: Stack) -> None:
    ahead = stack.start_worker(_skewed("+90s"), worker_name="node-a")
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=LONG_RUN).json()["id"]
        _running_on(client, experiment_id, "node-a")
        stack.start_worker(worker_name="node-b")
        wait_for(lambda: stack.log_text().count("ready.") >= 2, timeout=120, what="node-b ready")
        os.killpg(ahead.pid, signal.SIGKILL)
        killed = time.monotonic()
        _running_on(client, experiment_id, "node-b")
        took = time.monotonic() - killed
        print(f"\nrecovery: node-b took the run over {took:.1f} s after node-a died")
        assert took < LEASE_SECONDS + 20, f"takeover took {took:.1f} s"
        done = wait_for_status(client, experiment_id, TERMINAL, timeout=300)
        assert done["status"] == "succeeded", stack.log_tail()
        assert (done["attempts"], done["workers_lost"]) == (2, 1)
        epochs = [
            row["epoch"]
            for row in client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
        ]
        assert epochs == list(range(1, 61))
