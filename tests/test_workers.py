"""Workers and their accelerators: each training process beats into the database, GET /workers
lists the ones heard from lately with what they run, and a worker that must have a GPU and sees
none refuses to start with a sentence saying why."""

import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.services import BIN, ROOT, WORKER_COMMAND, Stack, running_stack, wait_for

pytestmark = pytest.mark.slow

SEEN_S = 4
LONG_RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 200, "batch_size": 16}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("workers")
    settings = {"lease_seconds": str(SEEN_S)}  # listed for a lease, beating six times in it
    with running_stack(home, workers=0, **settings) as running:
        yield running


def _workers(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/workers")
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


def test_two_workers_beat_and_the_list_says_what_each_runs(stack: Stack) -> None:
    with stack.client() as client:
        assert _workers(client) == []  # none started yet
    dying = stack.start_worker(worker_name="node-a")
    stack.start_worker(worker_name="node-b")
    with stack.client() as client:
        both = wait_for(
            lambda: (found := _workers(client)) and len(found) == 2 and found,
            timeout=120,
            what="two workers in /workers",
        )
        assert [worker["host"] for worker in both] == ["node-a", "node-b"]
        for worker in both:
            assert worker["name"].startswith(f"{worker['host']}/{worker['pid']}/")
            assert worker["accelerator"] == {"name": "cpu", "memory_mb": None}  # no GPU here
            assert worker["started_at"] <= worker["heartbeat_at"]
        first_beats = {worker["name"]: worker["heartbeat_at"] for worker in both}

        experiment_id = client.post("/experiments", json=LONG_RUN).json()["id"]

        def running() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(f"/experiments/{experiment_id}").json()
            return body if body["status"] == "running" else None

        worker_name = wait_for(running, timeout=120, what="the run to start")["worker"]
        listed = {worker["name"]: worker for worker in _workers(client)}
        assert listed[worker_name]["experiment_id"] == experiment_id
        assert [w["experiment_id"] for n, w in listed.items() if n != worker_name] == [None]
        assert all(listed[name]["heartbeat_at"] > beat for name, beat in first_beats.items())

        os.killpg(dying.pid, signal.SIGKILL)  # a machine gone: no goodbye, no more beats
        wait_for(
            lambda: [worker["host"] for worker in _workers(client)] == ["node-b"],
            timeout=SEEN_S + 30,
            what="node-a to leave /workers",
        )
        client.post(f"/experiments/{experiment_id}/cancel")


def test_a_worker_that_requires_a_gpu_and_sees_none_refuses_to_start(stack: Stack) -> None:
    env = {**stack.env, "CONVLAB_REQUIRE_GPU": "true"}
    program, *args = WORKER_COMMAND.split()
    done = subprocess.run(
        [str(BIN / program), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CONVLAB_REQUIRE_GPU is true but this worker sees no GPU" in done.stderr
    assert "Traceback" not in done.stderr
