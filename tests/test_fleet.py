"""A fleet of workers on a lab's servers (PostgreSQL, Redis): machines named apart share one
queue, a machine that dies mid-epoch hands its run to another within the lease, and leases are
on the database's clock, so a worker whose own clock is 90 s off (faketime) neither loses a
healthy run nor delays its takeover."""

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import Stack, missing, server_stack, wait_for, wait_for_status

pytestmark = pytest.mark.slow

LEASE_SECONDS = 10
TERMINAL = {"succeeded", "failed", "cancelled"}
EPOCHS = 60
"""Long enough that a machine is still training while a second one starts (seconds under load)."""
LONG_RUN = {"dataset": {"name": "digits"}, "training": {"epochs": EPOCHS, "batch_size": 16}}
SHORT_RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 2, "batch_size": 64}}


def _skewed(offset: str) -> str:
    """A command prefix that runs a worker with its wall clock ``offset`` off (its monotonic
    clock, which timeouts use, left alone); no prefix for no offset."""
    if not offset:
        return ""
    if shutil.which("faketime") is None:
        missing("faketime is not installed (Debian package faketime)")
    return f"env DONT_FAKE_MONOTONIC=1 faketime -f {offset}"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    settings = {"sweep_interval_s": "0.5", "lease_seconds": str(LEASE_SECONDS)}
    with server_stack(tmp_path, workers=0, checkpoint_seconds="0", **settings) as running:
        yield running


def _experiment(client: httpx.Client, experiment_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/experiments/{experiment_id}").json()
    return body


def _running_on(client: httpx.Client, experiment_id: str, machine: str) -> dict[str, Any]:
    def there() -> dict[str, Any] | None:
        body = _experiment(client, experiment_id)
        on_it = body["status"] == "running" and (body["worker"] or "").startswith(f"{machine}/")
        return body if on_it and body["epochs_done"] >= 1 else None

    found: dict[str, Any] = wait_for(there, timeout=180, what=f"a run on {machine}")
    return found


def _epochs(client: httpx.Client, experiment_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = client.get(f"/experiments/{experiment_id}/history").json()[
        "epochs"
    ]
    return rows


def test_workers_on_two_machines_share_one_queue(stack: Stack) -> None:
    stack.start_worker(worker_name="node-a")
    stack.start_worker(worker_name="node-b")
    with stack.client() as client:
        ids = [
            client.post("/experiments", json={**SHORT_RUN, "seed": seed}).json()["id"]
            for seed in range(6)
        ]
        for experiment_id in ids:
            done = wait_for_status(client, experiment_id, TERMINAL, timeout=300)
            assert (done["status"], done["attempts"]) == ("succeeded", 1), stack.log_tail()
    trained_by = [log.read_text() for log in sorted(stack.logs.glob("worker-*.log"))]
    assert all(" epoch 2: " in text for text in trained_by), "a worker trained nothing"


@pytest.mark.parametrize("offset", ["", "+90s"], ids=["own-clock", "clock-90s-ahead"])
def test_a_machine_that_dies_mid_epoch_hands_its_run_over_within_the_lease(
    stack: Stack, offset: str
) -> None:
    dying = stack.start_worker(_skewed(offset), worker_name="node-a")
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=LONG_RUN).json()["id"]
        _running_on(client, experiment_id, "node-a")
        stack.start_worker(worker_name="node-b")
        wait_for(lambda: stack.log_text().count("ready.") >= 2, timeout=120, what="node-b")
        before = _epochs(client, experiment_id)
        os.killpg(dying.pid, signal.SIGKILL)
        killed = time.monotonic()
        _running_on(client, experiment_id, "node-b")
        took = time.monotonic() - killed
        print(f"\nrecovery: node-b took the run over {took:.1f} s after node-a died")
        assert took < LEASE_SECONDS + 20, f"takeover took {took:.1f} s"
        done = wait_for_status(client, experiment_id, TERMINAL, timeout=300)
        assert done["status"] == "succeeded", stack.log_tail()
        assert (done["attempts"], done["workers_lost"]) == (2, 1)
        after = _epochs(client, experiment_id)
        assert [row["epoch"] for row in after] == list(range(1, EPOCHS + 1))
        assert after[: len(before) - 1] == before[:-1]  # resumed from its checkpoint, not redone


def test_a_worker_90s_behind_keeps_its_healthy_run(stack: Stack) -> None:
    stack.start_worker(_skewed("-90s"))
    with stack.client() as client:
        # Were leases on this worker's clock, each would have ended 80 s before it began, and
        # the sweeper (every 0.5 s) would take the run at once: 30 epochs are many sweeps.
        training = {"epochs": 30, "batch_size": 16}
        response = client.post("/experiments", json={**LONG_RUN, "training": training})
        done = wait_for_status(client, response.json()["id"], TERMINAL, timeout=300)
    assert done["status"] == "succeeded", stack.log_tail()
    assert (done["attempts"], done["workers_lost"]) == (1, 0), stack.log_tail()
