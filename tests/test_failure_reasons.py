"""A run that fails says why, at once: a failure before the first epoch (a spec that no longer
holds, a model that is not what its spec says, a crash while building) ends the run ``failed``
with its reason after one attempt, its lease released, and the worker goes on to the next run.
Faults are planted in a real worker through ``tests/faults`` (its sitecustomize)."""

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import ROOT, Stack, running_stack, stop_process, wait_for_status
from tests.test_custom_datasets import quadrant_folder

DIGITS = {
    "dataset": {"name": "digits", "train_size": 200, "test_size": 50},
    "model": {"conv_filters": [8], "dense_units": [16]},
    "training": {"epochs": 1, "batch_size": 64},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An API with no worker: each test starts the worker it needs, once its runs wait."""
    with running_stack(tmp_path_factory.mktemp("failure-reasons"), workers=0) as up:
        yield up


def _worker_with(stack: Stack, fault: str | None) -> None:
    """Stop any running worker, then start one with ``fault`` planted (None: none)."""
    for worker in stack.workers:
        stop_process(worker)
    if fault is None:
        stack.env.pop("CONVLAB_TEST_FAULT", None)
    else:
        stack.env.update(PYTHONPATH=str(ROOT / "tests" / "faults"), CONVLAB_TEST_FAULT=fault)
    stack.start_worker()


def _submit(stack: Stack, body: dict[str, Any]) -> str:
    with stack.client() as client:
        response = client.post("/experiments", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _ended(stack: Stack, experiment_id: str) -> dict[str, Any]:
    with stack.client() as client:
        return wait_for_status(client, experiment_id, {"succeeded", "failed"}, timeout=180)


def _failed_once(run: dict[str, Any], stack: Stack) -> str:
    """The error of a run that failed on its first attempt, its lease released."""
    assert run["status"] == "failed", stack.log_tail()
    assert (run["attempts"], run["workers_lost"], run["worker"]) == (1, 0, None), run
    assert "worker lost" not in run["error"]
    return str(run["error"])


def test_a_spec_that_no_longer_holds_fails_with_its_reason_and_the_next_run_trains(
    stack: Stack,
) -> None:
    root = Path(stack.env["CONVLAB_HOME"]) / "data" / "custom" / "vanishing"
    quadrant_folder(root, 40, 12)
    broken = _submit(stack, {**DIGITS, "dataset": {"name": "vanishing"}})
    after = _submit(stack, DIGITS)
    shutil.rmtree(root / "test")  # after the submit, before any worker reads the spec

    _worker_with(stack, None)

    error = _failed_once(_ended(stack, broken), stack)
    assert error.startswith("its spec no longer holds on this worker (dataset.name: "), error
    assert f"it has no test/ folder ({root / 'test'})" in error
    assert _ended(stack, after)["status"] == "succeeded", stack.log_tail()


def test_a_model_built_with_another_learning_rate_fails_before_training(stack: Stack) -> None:
    _worker_with(stack, "rate_dropped")
    body = {**DIGITS, "optimizer": {"name": "adam", "learning_rate": 0.00863}}

    run = _ended(stack, _submit(stack, body))

    error = _failed_once(run, stack)
    assert "optimizer.learning_rate is 0.001, the spec says 0.00863" in error, error
    with stack.client() as client:
        history = client.get(f"/experiments/{run['id']}/history").json()["epochs"]
    assert history == []


def test_any_other_error_before_training_fails_with_its_type_and_message(stack: Stack) -> None:
    _worker_with(stack, "build_crashes")

    run = _ended(stack, _submit(stack, DIGITS))

    error = _failed_once(run, stack)
    assert error == "Training crashed: RuntimeError: planted fault: the builder crashed"
    assert (
        "RuntimeError: planted fault: the builder crashed"
        in stack.log_text().split("Traceback", 1)[-1]
    )
