"""The embedded default, end to end: API and Celery worker processes, SQLite DB and broker,
real training on scikit-learn's digits."""

import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.archives import write_cifar10
from tests.events import parse_events
from tests.services import Stack, running_stack, wait_for, wait_for_status

pytestmark = pytest.mark.slow

DIGITS = {"dataset": {"name": "digits"}}
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("stack")
    with running_stack(home) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as http:
        yield http


def _pool_processes(parent_pid: int) -> list[int]:
    children = Path(f"/proc/{parent_pid}/task/{parent_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def _loaded_tensorflow(pid: int) -> bool:
    return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()


def test_base_on_digits_learns_and_records_every_epoch(client: httpx.Client, stack: Stack) -> None:
    response = client.post(
        "/experiments",
        json={"preset": "base", **DIGITS, "training": {"epochs": 5, "batch_size": 64}},
    )
    assert response.status_code == 201
    experiment = wait_for_status(client, response.json()["id"], TERMINAL)
    assert experiment["status"] == "succeeded", stack.log_tail()
    epochs = client.get(f"/experiments/{experiment['id']}/history").json()["epochs"]
    assert [row["epoch"] for row in epochs] == [1, 2, 3, 4, 5]
    assert epochs[-1]["val_accuracy"] >= 0.85
    assert epochs[-1]["accuracy"] > epochs[0]["accuracy"]
    assert all(row["seconds"] > 0 for row in epochs)
    assert experiment["final"]["val_accuracy"] == epochs[-1]["val_accuracy"]
    assert experiment["best"]["val_accuracy"] == max(row["val_accuracy"] for row in epochs)
    assert experiment["attempts"] == 1
    assert experiment["started_at"] <= experiment["finished_at"]


def test_base_preset_trains_on_a_cifar10_archive_in_the_data_dir(
    client: httpx.Client, stack: Stack
) -> None:
    data_dir = Path(stack.env["CONVLAB_HOME"]) / "data"
    data_dir.mkdir(exist_ok=True)
    write_cifar10(data_dir, per_batch=20)
    cifar10 = next(item for item in client.get("/datasets").json() if item["name"] == "cifar10")
    assert cifar10["available"] is True
    experiment_id = client.post("/experiments", json={"training": {"epochs": 2}}).json()["id"]
    experiment = wait_for_status(client, experiment_id, TERMINAL)
    assert experiment["status"] == "succeeded", experiment["error"]
    assert experiment["spec"]["dataset"]["name"] == "cifar10"
    assert experiment["epochs_done"] == 2


def test_early_stopping_ends_the_run_before_its_last_epoch(client: httpx.Client) -> None:
    early = {"monitor": "val_accuracy", "patience": 1, "min_delta": 1.0}
    experiment_id = client.post(
        "/experiments",
        json={
            "preset": "early_stopping",
            **DIGITS,
            "training": {"epochs": 10, "early_stopping": early},
        },
    ).json()["id"]
    experiment = wait_for_status(client, experiment_id, TERMINAL)
    assert experiment["status"] == "succeeded"
    assert (experiment["epochs_done"], experiment["epochs_total"]) == (2, 10)


def test_tensorflow_loads_only_in_the_warm_pool_process(client: httpx.Client, stack: Stack) -> None:
    pools_before = _pool_processes(stack.worker.pid)
    for seed in (1, 2):
        experiment_id = client.post(
            "/experiments", json={**DIGITS, "seed": seed, "training": {"epochs": 1}}
        ).json()["id"]
        assert wait_for_status(client, experiment_id, TERMINAL)["status"] == "succeeded"
    pools_after = _pool_processes(stack.worker.pid)
    assert pools_after == pools_before and len(pools_after) == 1
    assert _loaded_tensorflow(pools_after[0])
    assert not _loaded_tensorflow(stack.worker.pid)


def test_the_same_seed_gives_the_same_history_in_a_warm_worker(client: httpx.Client) -> None:
    body = {**DIGITS, "seed": 7, "training": {"epochs": 3, "batch_size": 64}}
    histories = []
    for _ in range(2):
        experiment_id = client.post("/experiments", json=body).json()["id"]
        assert wait_for_status(client, experiment_id, TERMINAL)["status"] == "succeeded"
        epochs = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
        histories.append([row[key] for row in epochs for key in ("loss", "val_accuracy")])
    assert histories[0] == pytest.approx(histories[1], rel=1e-4)


def test_history_fills_while_running_and_cancel_keeps_finished_epochs(
    client: httpx.Client, stack: Stack
) -> None:
    experiment_id = client.post(
        "/experiments", json={**DIGITS, "training": {"epochs": 200, "batch_size": 8}}
    ).json()["id"]

    def some_epochs_while_running() -> list[dict[str, float]] | None:
        history = client.get(f"/experiments/{experiment_id}/history").json()
        done = history["epochs"]
        return done if history["status"] == "running" and len(done) >= 2 else None

    wait_for(some_epochs_while_running, timeout=120, what="epochs of a running experiment")
    assert client.post(f"/experiments/{experiment_id}/cancel").status_code == 202
    experiment = wait_for_status(client, experiment_id, TERMINAL, timeout=15)
    assert experiment["status"] == "cancelled"
    kept = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
    assert 2 <= len(kept) < 200
    assert [row["epoch"] for row in kept] == list(range(1, len(kept) + 1))
    assert experiment["epochs_done"] == len(kept)


def test_the_event_stream_follows_a_run_live_and_resumes_after_a_dropped_connection(
    client: httpx.Client,
) -> None:
    body = {**DIGITS, "training": {"epochs": 4, "batch_size": 16}}
    experiment_id = client.post("/experiments", json=body).json()["id"]
    url = f"/experiments/{experiment_id}/events"
    before_drop: list[dict[str, Any]] = []
    with client.stream("GET", url, timeout=120) as stream:
        for event in parse_events(stream.iter_lines()):
            before_drop.append(event)
            if event["event"] == "epoch":
                break  # the connection drops after the first epoch
    assert [e["data"]["status"] for e in before_drop if e["event"] == "status"][-1] == "running"
    assert before_drop[-1]["id"] == "1"

    with client.stream(
        "GET", url, headers={"Last-Event-ID": before_drop[-1]["id"]}, timeout=120
    ) as stream:
        after_drop = list(parse_events(stream.iter_lines()))  # ends by itself when finished
    assert [e["id"] for e in after_drop if e["event"] == "epoch"] == ["2", "3", "4"]
    assert after_drop[-1]["event"] == "status"
    assert after_drop[-1]["data"]["status"] == "succeeded"
    history = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
    streamed = [e["data"] for e in before_drop + after_drop if e["event"] == "epoch"]
    assert streamed == history


def test_queued_experiment_cancelled_before_its_turn_never_runs(client: httpx.Client) -> None:
    blocker = client.post("/experiments", json={**DIGITS, "training": {"epochs": 3}}).json()["id"]
    waiting = client.post("/experiments", json={**DIGITS, "training": {"epochs": 3}}).json()["id"]
    assert client.post(f"/experiments/{waiting}/cancel").json()["status"] == "cancelled"
    assert wait_for_status(client, blocker, TERMINAL)["status"] == "succeeded"
    after = client.get(f"/experiments/{waiting}").json()
    assert (after["status"], after["started_at"], after["attempts"]) == ("cancelled", None, 0)


def test_a_dataset_that_cannot_be_had_is_refused_saying_where_to_put_it(
    client: httpx.Client, stack: Stack
) -> None:
    """The API sees the data directory, as under `make up`: it refuses at submit with the
    sentence a worker would fail with (``test_cli`` sees a worker fail where it cannot)."""
    data = Path(stack.env["CONVLAB_HOME"]) / "data"
    data.mkdir(exist_ok=True)
    response = client.post(
        "/experiments", json={"dataset": {"name": "mnist"}, "training": {"epochs": 1}}
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "dataset", "name"]
    assert "put mnist.npz (from https://" in error["msg"]
    assert f"in {data.resolve()}, or give this machine internet access" in error["msg"]


def test_diverging_training_fails_naming_the_epoch_and_learning_rate(
    client: httpx.Client, stack: Stack
) -> None:
    experiment_id = client.post(
        "/experiments",
        json={
            **DIGITS,
            "model": {"l2": 1.0},
            "optimizer": {"name": "sgd", "learning_rate": 10.0},
            "training": {"epochs": 20, "batch_size": 64},
        },
    ).json()["id"]
    experiment = wait_for_status(client, experiment_id, TERMINAL)
    assert experiment["status"] == "failed", stack.log_tail()
    assert "learning rate 10.0 too high?" in experiment["error"]
    assert experiment["error"].startswith("loss became NaN at epoch 1 ")
    assert experiment["attempts"] == 1  # not retried
    assert client.get(f"/experiments/{experiment_id}/history").json()["epochs"] == []


def test_a_small_study_tabulates_its_experiments_last_epochs(client: httpx.Client) -> None:
    body = {
        "name": "two presets, two seeds",
        "presets": ["base", "dropout"],
        "seeds": [0, 1],
        **DIGITS,
        "training": {"epochs": 2, "batch_size": 64},
    }
    study = client.post("/studies", json=body).json()
    for experiment_id in study["experiment_ids"]:
        assert wait_for_status(client, experiment_id, TERMINAL)["status"] == "succeeded"
    table = client.get(f"/studies/{study['id']}/table").json()["table"]
    experiments = [client.get(f"/experiments/{i}").json() for i in study["experiment_ids"]]
    for row in table:
        last_epochs = [
            client.get(f"/experiments/{e['id']}/history").json()["epochs"][-1]
            for e in experiments
            if e["spec"]["preset"] == row["variant"]
        ]
        accuracies = [epoch["val_accuracy"] for epoch in last_epochs]
        assert row["runs"] == 2
        assert row["test_accuracy"]["mean"] == pytest.approx(statistics.fmean(accuracies))
        assert row["test_accuracy"]["std"] == pytest.approx(statistics.stdev(accuracies))
        losses = [epoch["loss"] for epoch in last_epochs]
        assert row["train_loss"]["mean"] == pytest.approx(statistics.fmean(losses))
    assert client.get(f"/studies/{study['id']}").json()["status"] == "succeeded"
    markdown = client.get(f"/studies/{study['id']}/table", params={"format": "markdown"}).text
    assert [line.split(" | ")[0] for line in markdown.splitlines()[2:]] == ["| base", "| dropout"]


def test_a_search_prunes_hopeless_trials_and_beats_a_bad_learning_rate(
    client: httpx.Client, stack: Stack
) -> None:
    training = {"epochs": 4, "batch_size": 64}
    bad_start = client.post(
        "/experiments",
        json={**DIGITS, "optimizer": {"learning_rate": 1e-5}, "training": training},
    ).json()["id"]
    search = {
        "space": {
            "optimizer.learning_rate": {"type": "float", "low": 1e-5, "high": 0.05, "log": True}
        },
        "sampler": "random",
        "n_trials": 6,
        "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    }
    study = client.post(
        "/studies", json={**DIGITS, "training": training, "seeds": [3], "search": search}
    ).json()

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/studies/{study['id']}").json()
        return body if body["status"] not in {"queued", "running"} else None

    done = wait_for(finished, timeout=240, what="the search to finish")
    assert done["progress"]["trials_started"] == 6, stack.log_tail()
    trials = [client.get(f"/experiments/{i}").json() for i in done["experiment_ids"]]
    pruned = [t for t in trials if t["status"] == "cancelled"]
    assert pruned, [t["error"] for t in trials]
    for trial in pruned:
        assert trial["error"] == f"pruned at epoch {trial['epochs_done']}"
        assert len(client.get(f"/experiments/{trial['id']}/history").json()["epochs"]) >= 1
    best = done["best_trial"]
    bad = wait_for_status(client, bad_start, TERMINAL)["best"]["val_accuracy"]
    assert best["value"] > bad
    assert best["params"]["optimizer.learning_rate"] > 1e-4
