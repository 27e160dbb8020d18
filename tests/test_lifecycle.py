"""Iterating on experiments against a real stack and worker training digits: rerun with
changes (``from``), continue from the last checkpoint, pause and resume."""

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import Settings
from jobs.queueing import requeue_abandoned
from models.presets import resolve
from models.status import Status
from models.study_state import status_of
from store.db import get_engine, migrate, session_scope
from store.experiments import create_experiment
from store.tables import Experiment
from store.transitions import claim, pause
from tests.services import BIN, Stack, running_stack, wait_for, wait_for_status

pytestmark = pytest.mark.slow

TERMINAL = {"succeeded", "failed", "cancelled"}
SHORT_RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 3, "batch_size": 64}}
# About 0.2 s per epoch on 2 cores: long enough to be paused mid-run.
LONG_RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 12, "batch_size": 16}}
SETTINGS = {
    "sweep_interval_s": "0.5",
    "lease_seconds": "10",
    "checkpoint_seconds": "0",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home: Path = tmp_path_factory.mktemp("lifecycle")
    with running_stack(home, workers=1, **SETTINGS) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as http:
        yield http


def _submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/experiments", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _epochs(client: httpx.Client, experiment_id: str) -> list[dict[str, Any]]:
    epochs: list[dict[str, Any]] = client.get(f"/experiments/{experiment_id}/history").json()[
        "epochs"
    ]
    return epochs


def _succeeded(stack: Stack, client: httpx.Client, experiment_id: str) -> dict[str, Any]:
    done = wait_for_status(client, experiment_id, TERMINAL)
    assert done["status"] == "succeeded", stack.log_tail()
    return done


def _running_with_epochs(client: httpx.Client, experiment_id: str, at_least: int) -> None:
    def ready() -> bool:
        experiment = client.get(f"/experiments/{experiment_id}").json()
        return bool(experiment["status"] == "running" and experiment["epochs_done"] >= at_least)

    wait_for(ready, timeout=120, what=f"{experiment_id} running with {at_least} epochs")


def _convlab(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "convlab"), *args],
        env={**stack.env, "CONVLAB_URL": stack.url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _post(client: httpx.Client, experiment_id: str, action: str, **body: Any) -> httpx.Response:
    return client.post(f"/experiments/{experiment_id}/{action}", json=body or None)


def test_rerun_from_an_experiment_merges_the_body_over_its_spec(client: httpx.Client) -> None:
    parent = _submit(client, {**SHORT_RUN, "preset": "dropout", "seed": 7})
    child = _submit(client, {"from": parent["id"], "optimizer": {"learning_rate": 0.01}})
    assert child["parent_id"] == parent["id"]
    assert child["spec"]["optimizer"]["learning_rate"] == 0.01
    expected = {**parent["spec"], "optimizer": {**parent["spec"]["optimizer"]}}
    expected["optimizer"]["learning_rate"] = 0.01
    assert child["spec"] == expected
    assert parent["parent_id"] is None
    for experiment in (parent, child):
        _post(client, experiment["id"], "cancel")


def test_rerun_from_refuses_unknown_ids_and_invalid_merges(client: httpx.Client) -> None:
    missing = client.post("/experiments", json={"from": "0" * 32})
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"Experiment {'0' * 32} not found."
    parent = _submit(client, SHORT_RUN)
    _post(client, parent["id"], "cancel")
    invalid = client.post("/experiments", json={"from": parent["id"], "training": {"epochs": 0}})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "training", "epochs"]
    both = client.post("/experiments", json={"from": parent["id"], "preset": "l2"})
    assert both.status_code == 422
    assert both.json()["detail"][0]["loc"] == ["body", "preset"]


def test_continue_numbers_epochs_after_the_parent_and_trains_on_from_its_weights(
    stack: Stack, client: httpx.Client
) -> None:
    parent = _submit(client, SHORT_RUN)
    _succeeded(stack, client, parent["id"])
    response = _post(client, parent["id"], "continue", epochs=2)
    assert response.status_code == 201, response.text
    child = response.json()
    assert response.headers["location"] == f"/experiments/{child['id']}"
    assert (child["parent_id"], child["status"]) == (parent["id"], "queued")
    assert (child["epochs_done"], child["epochs_total"]) == (3, 5)
    assert child["spec"]["training"]["epochs"] == 5
    done = _succeeded(stack, client, child["id"])
    assert (done["epochs_done"], done["epochs_total"]) == (5, 5)
    before, after = _epochs(client, parent["id"]), _epochs(client, child["id"])
    assert [row["epoch"] for row in after] == [4, 5]
    # From scratch, the first epoch's loss is the parent's first (about 2.2 on digits); from
    # the parent's weights it goes on below the parent's second.
    assert after[0]["loss"] < before[1]["loss"] < before[0]["loss"]
    assert _epochs(client, parent["id"]) == before  # the parent is left as it was


def test_a_continued_runs_curves_join_its_parents_up_to_where_each_continued(
    stack: Stack, client: httpx.Client
) -> None:
    parent = _submit(client, SHORT_RUN)
    _succeeded(stack, client, parent["id"])
    child = _post(client, parent["id"], "continue", epochs=2).json()
    _succeeded(stack, client, child["id"])
    grandchild = _post(client, child["id"], "continue", epochs=1).json()
    _succeeded(stack, client, grandchild["id"])
    url = f"/experiments/{grandchild['id']}/history"

    joined = client.get(url, params={"lineage": "true"}).json()
    rows = [*_epochs(client, parent["id"]), *_epochs(client, child["id"])]
    assert joined["epochs"] == [*rows, *_epochs(client, grandchild["id"])]
    assert [row["epoch"] for row in joined["epochs"]] == [1, 2, 3, 4, 5, 6]
    assert joined["lineage"] == [
        {"experiment_id": parent["id"], "first_epoch": 1, "last_epoch": 3},
        {"experiment_id": child["id"], "first_epoch": 4, "last_epoch": 5},
        {"experiment_id": grandchild["id"], "first_epoch": 6, "last_epoch": 6},
    ]
    later = client.get(url, params={"lineage": "true", "since": 4}).json()["epochs"]
    assert [row["epoch"] for row in later] == [5, 6]
    csv = client.get(url, params={"lineage": "true", "format": "csv"}).text.splitlines()
    assert [line.split(",")[0] for line in csv[1:]] == ["1", "2", "3", "4", "5", "6"]
    assert "lineage" not in client.get(url).json()  # only asked for

    plot = f"/experiments/{grandchild['id']}/plot.svg"
    drawn, alone = client.get(plot, params={"lineage": "true"}), client.get(plot)
    assert drawn.headers["etag"] != alone.headers["etag"]
    for metric in ("accuracy", "loss"):
        for epoch in (4, 6):
            assert f'id="{metric}-continued-at-{epoch}"' in drawn.text
        assert "continued-at" not in alone.text

    rerun = _submit(client, {"from": parent["id"]})  # a rerun starts afresh: nothing joined
    _succeeded(stack, client, rerun["id"])
    runs = (parent, child, grandchild, rerun)
    own = client.get(f"/experiments/{rerun['id']}/history", params={"lineage": "true"}).json()
    assert [part["experiment_id"] for part in own["lineage"]] == [rerun["id"]]
    offsets = [client.get(f"/experiments/{run['id']}").json()["epoch_offset"] for run in runs]
    assert offsets == [0, 3, 5, 0]

    # Deleting a run others continue would shorten their joined history: asked first.
    refused = client.delete(f"/experiments/{child['id']}")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"Experiment {child['id']} is continued by {grandchild['id']}: deleting it takes its "
        "epochs out of their history with ?lineage=true; force=true deletes it all the same."
    )
    declined = _convlab(stack, "delete", child["id"])
    assert declined.returncode == 1 and declined.stdout == ""
    assert declined.stderr.strip() == refused.json()["detail"].replace("force=true", "--force")
    asked = subprocess.run(  # in a terminal (script gives it one) the CLI asks
        ["script", "-qec", f"{BIN / 'convlab'} delete {child['id']}", "/dev/null"],
        input="n\n",
        env={**stack.env, "CONVLAB_URL": stack.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert asked.returncode == 1
    assert "Delete it all the same? [y/N]: " in asked.stdout
    assert asked.stdout.rstrip().endswith(f"{child['id']} not deleted.")
    assert client.get(url, params={"lineage": "true"}).json()["epochs"] == joined["epochs"]
    forced = _convlab(stack, "delete", child["id"], "--force")
    assert (forced.returncode, forced.stdout) == (0, f"{child['id']} deleted\n")
    shortened = client.get(url, params={"lineage": "true"}).json()
    assert [part["experiment_id"] for part in shortened["lineage"]] == [grandchild["id"]]
    # A rerun does not continue its parent: the parent goes without a question.
    assert client.delete(f"/experiments/{parent['id']}").status_code == 204


def test_continue_refuses_active_unstarted_and_oversized_runs(
    stack: Stack, client: httpx.Client
) -> None:
    never_ran = _submit(client, SHORT_RUN)
    _post(client, never_ran["id"], "cancel")
    response = _post(client, never_ran["id"], "continue", epochs=2)
    assert response.status_code == 409
    assert "no checkpoint" in response.json()["detail"]
    running = _submit(client, LONG_RUN)
    _running_with_epochs(client, running["id"], at_least=1)
    response = _post(client, running["id"], "continue", epochs=2)
    assert response.status_code == 409
    assert response.json()["detail"].startswith(f"Experiment {running['id']} is running")
    _post(client, running["id"], "cancel")
    wait_for_status(client, running["id"], TERMINAL)
    response = _post(client, running["id"], "continue", epochs=1000)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "epochs"]
    assert _post(client, "0" * 32, "continue", epochs=2).status_code == 404


def test_pause_of_a_running_run_frees_its_worker_and_resume_loses_no_epoch(
    stack: Stack, client: httpx.Client
) -> None:
    paused = _submit(client, LONG_RUN)
    waiting = _submit(client, SHORT_RUN)
    _running_with_epochs(client, paused["id"], at_least=2)
    response = _post(client, paused["id"], "pause")
    assert response.status_code == 202
    assert response.json()["status"] in {"running", "paused"}
    stopped = wait_for_status(client, paused["id"], {"paused"})
    kept = _epochs(client, paused["id"])
    assert [row["epoch"] for row in kept] == list(range(1, stopped["epochs_done"] + 1))
    assert stopped["worker"] is None and stopped["epochs_done"] < 12
    # The worker is free: the run queued behind it trains meanwhile.
    _succeeded(stack, client, waiting["id"])
    assert client.get(f"/experiments/{paused['id']}").json()["status"] == "paused"
    listed = client.get("/experiments", params={"status": "paused"}).json()["items"]
    assert [item["id"] for item in listed] == [paused["id"]]
    assert _post(client, paused["id"], "continue", epochs=1).status_code == 409
    response = _post(client, paused["id"], "resume")
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    _succeeded(stack, client, paused["id"])
    history = _epochs(client, paused["id"])
    assert [row["epoch"] for row in history] == list(range(1, 13))
    assert history[: len(kept)] == kept  # the epochs before the pause were not trained again


def test_pause_of_a_queued_run_holds_it_until_resumed(stack: Stack, client: httpx.Client) -> None:
    busy = _submit(client, LONG_RUN)
    held = _submit(client, SHORT_RUN)
    response = _post(client, held["id"], "pause")
    assert (response.status_code, response.json()["status"]) == (202, "paused")
    _running_with_epochs(client, busy["id"], at_least=1)
    _post(client, busy["id"], "cancel")
    wait_for_status(client, busy["id"], TERMINAL)
    # The worker takes the paused run's message and leaves it alone.
    wait_for(
        lambda: f"woken for {held['id']}, but no run is waiting" in stack.log_text(),
        timeout=60,
        what="the worker to drop the paused run's message",
    )
    still = client.get(f"/experiments/{held['id']}").json()
    assert (still["status"], still["attempts"], still["epochs_done"]) == ("paused", 0, 0)
    assert _post(client, held["id"], "resume").status_code == 202
    _succeeded(stack, client, held["id"])
    assert [row["epoch"] for row in _epochs(client, held["id"])] == [1, 2, 3]


def test_wrong_states_are_409_and_a_paused_run_can_be_cancelled(
    stack: Stack, client: httpx.Client
) -> None:
    busy = _submit(client, LONG_RUN)
    held = _submit(client, SHORT_RUN)
    assert _post(client, held["id"], "resume").status_code == 409  # queued, not paused
    assert _post(client, held["id"], "pause").status_code == 202
    again = _post(client, held["id"], "pause")
    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"Experiment {held['id']} is paused; only queued or running experiments can be paused."
    )
    cancelled = _post(client, held["id"], "cancel")
    assert (cancelled.status_code, cancelled.json()["status"]) == (202, "cancelled")
    resumed = _post(client, held["id"], "resume")
    assert resumed.status_code == 409
    assert "not paused" in resumed.json()["detail"]
    assert _post(client, held["id"], "pause").status_code == 409
    assert _post(client, "0" * 32, "pause").status_code == 404
    _post(client, busy["id"], "cancel")
    wait_for_status(client, busy["id"], TERMINAL)


def test_the_cli_pauses_resumes_continues_and_reruns(stack: Stack, client: httpx.Client) -> None:
    busy = _submit(client, LONG_RUN)
    held = _submit(client, SHORT_RUN)
    assert _convlab(stack, "pause", held["id"]).stdout == f"{held['id']} paused\n"
    assert _convlab(stack, "resume", held["id"]).stdout == f"{held['id']} queued\n"
    refused = _convlab(stack, "continue", busy["id"], "--epochs", "2")
    assert refused.returncode == 1 and "once it has ended" in refused.stderr
    rerun = _convlab(stack, "submit", "--from", held["id"], "--set", "optimizer.learning_rate=0.01")
    rerun_id = rerun.stdout.strip()
    rerun_spec = client.get(f"/experiments/{rerun_id}").json()
    assert (rerun_spec["parent_id"], rerun_spec["spec"]["optimizer"]["learning_rate"]) == (
        held["id"],
        0.01,
    )
    for experiment_id in (busy["id"], rerun_id):
        _post(client, experiment_id, "cancel")
    _succeeded(stack, client, held["id"])
    continued = _convlab(stack, "continue", held["id"], "--epochs", "1")
    child = client.get(f"/experiments/{continued.stdout.strip()}").json()
    assert (child["parent_id"], child["epochs_total"]) == (held["id"], 4)
    _post(client, child["id"], "cancel")
    wait_for_status(client, child["id"], TERMINAL)


def test_a_study_with_a_paused_run_has_not_finished() -> None:
    def member(status: Status) -> Experiment:
        return Experiment(id=status, preset="base", spec={}, epochs_total=1, status=status)

    assert status_of([member(Status.succeeded), member(Status.paused)]) == Status.paused
    assert status_of([member(Status.queued), member(Status.paused)]) == Status.running
    assert status_of([member(Status.running), member(Status.paused)]) == Status.running


def test_a_run_paused_while_its_worker_vanished_ends_paused(settings: Settings) -> None:
    engine = get_engine(settings.resolved_database_url)
    migrate(engine)
    with session_scope(engine) as session:
        spec = resolve("base", {}).model_dump(mode="json")
        experiment_id = create_experiment(session, name=None, spec=spec).id
    assert claim(engine, experiment_id, "a/1/gone", lease_seconds=0.1, max_lost=3)
    with session_scope(engine) as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        assert pause(session, experiment).pause_requested
    time.sleep(0.2)
    assert requeue_abandoned(engine, lease_seconds=0.1) == [experiment_id]
    with session_scope(engine) as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        assert (experiment.status, experiment.pause_requested) == (Status.paused, False)
