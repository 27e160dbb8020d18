"""optuna-dashboard, as the compose stack's ``optuna`` profile runs it, reads a search that
really ran (digits, two trials of two epochs) from convlab's own PostgreSQL database."""

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import BIN, Stack, free_port, server_stack, stop_process, wait_for

pytestmark = pytest.mark.slow

SEARCH = {
    "name": "learning rate, for optuna-dashboard",
    "dataset": {"name": "digits"},
    "training": {"epochs": 2, "batch_size": 64},
    "search": {
        "space": {
            "optimizer.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}
        },
        "sampler": "random",
        "n_trials": 2,
        "pruner": {"type": "none"},
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with server_stack(tmp_path_factory.mktemp("optuna-dashboard")) as running:
        yield running


@pytest.fixture(scope="module")
def search(stack: Stack) -> dict[str, Any]:
    """The search, finished; with its trials (experiments) and their histories."""
    with stack.client() as client:
        created = client.post("/studies", json=SEARCH)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]

        def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(f"/studies/{study_id}").json()
            return body if body["status"] not in {"queued", "running"} else None

        done = wait_for(finished, timeout=300, what="the search to finish")
        assert done["status"] == "succeeded", stack.log_tail()
        trials = []
        for experiment_id in done["experiment_ids"]:
            experiment = client.get(f"/experiments/{experiment_id}").json()
            history = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
            trials.append({**experiment, "history": history})
    return {**done, "trials": trials}


@pytest.fixture(scope="module")
def dashboard(
    stack: Stack, search: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """optuna-dashboard on convlab's database URL, as a process of its own."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("dashboard-log") / "optuna-dashboard.log"
    storage = stack.env["CONVLAB_DATABASE_URL"]
    command = [str(BIN / "optuna-dashboard"), storage, "--port", str(port), "--host", "127.0.0.1"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_for(lambda: _answers(client, process, log_path), timeout=60, what="optuna-dashboard")
        yield client
    finally:
        client.close()
        stop_process(process)


def _answers(client: httpx.Client, process: subprocess.Popen[bytes], log: Path) -> bool:
    assert process.poll() is None, f"optuna-dashboard exited:\n{log.read_text()}"
    try:
        return client.get("/api/meta").status_code == 200
    except httpx.TransportError:
        return False


def _dashboard_study(dashboard: httpx.Client, study_id: str) -> dict[str, Any]:
    listed = dashboard.get("/api/studies")
    assert listed.status_code == 200
    named = [
        s for s in listed.json()["study_summaries"] if s["study_name"] == f"convlab-{study_id}"
    ]
    assert len(named) == 1, listed.json()
    assert named[0]["directions"] == ["maximize"]  # val_accuracy, the search's metric
    detail = dashboard.get(f"/api/studies/{named[0]['study_id']}")
    assert detail.status_code == 200
    body: dict[str, Any] = detail.json()
    return body


def _trial_number(experiment: dict[str, Any]) -> int:
    """A trial's number, from the name convlab gives it ("trial 1: optimizer.learning_rate=...")."""
    return int(experiment["name"].split(":")[0].removeprefix("trial "))


def test_dashboard_lists_the_search_by_the_name_convlab_gives_it(
    dashboard: httpx.Client, search: dict[str, Any]
) -> None:
    study = _dashboard_study(dashboard, search["id"])
    assert study["name"] == f"convlab-{search['id']}"
    assert [trial["state"] for trial in study["trials"]] == ["Complete", "Complete"]


def test_dashboard_shows_each_trials_value_parameters_and_epochs(
    dashboard: httpx.Client, search: dict[str, Any]
) -> None:
    study = _dashboard_study(dashboard, search["id"])
    trials = {trial["number"]: trial for trial in study["trials"]}
    numbers = [_trial_number(experiment) for experiment in search["trials"]]
    assert sorted(trials) == sorted(numbers) == [0, 1]
    for experiment, number in zip(search["trials"], numbers, strict=True):
        trial = trials[number]
        accuracies = [row["val_accuracy"] for row in experiment["history"]]
        assert trial["values"] == [max(accuracies)]  # the best epoch's, as convlab tells Optuna
        reported = [(point["step"], point["value"]) for point in trial["intermediate_values"]]
        assert reported == [(row["epoch"], row["val_accuracy"]) for row in experiment["history"]]
        (param,) = trial["params"]
        assert param["name"] == "optimizer.learning_rate"
        learning_rate = experiment["spec"]["optimizer"]["learning_rate"]
        assert float(param["param_external_value"]) == learning_rate
    (best,) = study["best_trials"]
    assert (best["number"], best["values"]) == (
        search["best_trial"]["number"],
        [search["best_trial"]["value"]],
    )
