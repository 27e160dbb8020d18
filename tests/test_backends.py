"""Workers on any Keras 3 backend (``CONVLAB_KERAS_BACKEND``): a real Celery worker on JAX
(and on PyTorch where it is installed) trains digits through the HTTP API with the history a
TensorFlow worker writes, never loading TensorFlow; a run paused on a TensorFlow worker resumes
from its checkpoint on the other backend with no epoch lost or repeated; a backend that is
unknown or not installed is refused at worker start with a sentence."""

import importlib.util
import subprocess
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.epochs import EpochMetrics
from tests.services import (
    BIN,
    ROOT,
    WORKER_COMMAND,
    Stack,
    running_stack,
    stop_process,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.slow

TERMINAL = {"succeeded", "failed", "cancelled"}
SHORT_RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 3, "batch_size": 64}}
LONG_RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 8, "batch_size": 16}}
OTHERS = ["jax", *(["torch"] if importlib.util.find_spec("torch") is not None else [])]
"""The backends besides TensorFlow tested here: JAX (the test extra installs it) and PyTorch
where it is on the path (not installed by make install: BENCHMARKS.md says how to add it)."""
METRICS = {field.name for field in fields(EpochMetrics)}
"""What every epoch of a history holds, whichever backend trained it."""
FIRST_EPOCH_S = 300
"""JAX compiles its steps before the first epoch: a minute or more on two busy cores."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("backends")
    settings = {"sweep_interval_s": "0.5", "lease_seconds": "10", "checkpoint_seconds": "0"}
    with running_stack(home, workers=0, **settings) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as http:
        yield http


def _submit(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/experiments", json=body)
    assert response.status_code == 201, response.text
    experiment_id: str = response.json()["id"]
    return experiment_id


def _history(client: httpx.Client, experiment_id: str) -> list[dict[str, Any]]:
    epochs: list[dict[str, Any]] = client.get(f"/experiments/{experiment_id}/history").json()[
        "epochs"
    ]
    return epochs


def _succeeded(stack: Stack, client: httpx.Client, experiment_id: str) -> dict[str, Any]:
    done = wait_for_status(client, experiment_id, TERMINAL, timeout=FIRST_EPOCH_S)
    assert done["status"] == "succeeded", stack.log_tail()
    return done


def _complete(history: list[dict[str, Any]], epochs: int) -> None:
    """Every epoch once, in order, each with every metric the contract names."""
    assert [epoch["epoch"] for epoch in history] == list(range(1, epochs + 1))
    for epoch in history:
        assert epoch.keys() >= METRICS
        assert all(epoch[field] is not None for field in METRICS), epoch


def _loaded_tensorflow(pid: int) -> bool:
    return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("backend", OTHERS)
def test_a_worker_on_another_backend_trains_digits_with_the_same_history_and_no_tensorflow(
    stack: Stack, client: httpx.Client, backend: str
) -> None:
    worker = stack.start_worker(keras_backend=backend)
    try:
        experiment_id = _submit(client, SHORT_RUN)
        done = _succeeded(stack, client, experiment_id)
        history = _history(client, experiment_id)
        _complete(history, 3)
        assert history[-1]["val_accuracy"] > 0.5  # it learned
        [attempt] = done["attempt_log"]
        environment = attempt["environment"]
        assert environment["backend"] == backend
        assert environment[backend] and environment["tensorflow"] is None
        pool_pid = int(attempt["worker"].split("/")[1])
        assert not _loaded_tensorflow(pool_pid)  # installed here, kept out all the same
    finally:
        stop_process(worker)


@pytest.mark.parametrize("backend", OTHERS)
def test_a_run_paused_on_tensorflow_resumes_on_another_backend_without_a_gap(
    stack: Stack, client: httpx.Client, backend: str
) -> None:
    tensorflow_worker = stack.start_worker()
    try:
        experiment_id = _submit(client, LONG_RUN)
        wait_for(
            lambda: len(_history(client, experiment_id)) >= 2,
            timeout=FIRST_EPOCH_S,
            what="two epochs on TensorFlow",
        )
        assert client.post(f"/experiments/{experiment_id}/pause").status_code == 202
        wait_for_status(client, experiment_id, {"paused"})
    finally:
        stop_process(tensorflow_worker)
    kept = _history(client, experiment_id)
    other_worker = stack.start_worker(keras_backend=backend)
    try:
        assert client.post(f"/experiments/{experiment_id}/resume").status_code == 202
        done = _succeeded(stack, client, experiment_id)
    finally:
        stop_process(other_worker)
    history = _history(client, experiment_id)
    _complete(history, 8)
    assert history[: len(kept)] == kept  # the TensorFlow epochs, not trained again
    backends = [attempt["environment"]["backend"] for attempt in done["attempt_log"]]
    assert backends == ["tensorflow", backend]
    assert history[-1]["val_accuracy"] > 0.5


def test_another_backends_process_finds_tensorflow_without_a_file_but_never_loads_it() -> None:
    """PyTorch's compiler looks modules up with find_spec, which must answer, not raise."""
    looked_up = (
        "from worker.backends import choose; choose('jax'); import importlib.util; "
        "print(importlib.util.find_spec('tensorflow').origin); import tensorflow"
    )
    done = subprocess.run(
        [str(BIN / "python"), "-c", looked_up], cwd=ROOT, capture_output=True, text=True
    )
    assert done.stdout == "None\n", done.stderr
    assert "ModuleNotFoundError: this worker trains on jax" in done.stderr


@pytest.mark.parametrize(
    ("value", "sentence"),
    [
        ("tf", "CONVLAB_KERAS_BACKEND is 'tf', which is not a Keras backend convlab trains on"),
        pytest.param(
            "torch",
            "CONVLAB_KERAS_BACKEND is torch but torch is not installed",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("torch") is not None, reason="torch is installed here"
            ),
        ),
    ],
)
def test_a_backend_unknown_or_not_installed_is_refused_at_worker_start(
    stack: Stack, value: str, sentence: str
) -> None:
    program, *args = WORKER_COMMAND.split()
    done = subprocess.run(
        [str(BIN / program), *args],
        cwd=ROOT,
        env={**stack.env, "CONVLAB_KERAS_BACKEND": value},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert sentence in done.stderr
    assert "Traceback" not in done.stderr
