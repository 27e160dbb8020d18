"""A run's results once it ends, end to end on a real worker: its test set evaluated class by
class (the confusion matrix as JSON and as a picture), and its model as of its last epoch or
its best one."""

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import delete
from sqlmodel import col

from store.best_models import best_so_far
from store.db import get_engine, session_scope
from store.tables import Evaluation
from tests.pictures import PNG_SIGNATURE
from tests.services import Stack, running_stack, wait_for, wait_for_status
from tests.test_cli import convlab

pytestmark = pytest.mark.slow

DIGITS = {"dataset": {"name": "digits"}, "training": {"epochs": 4, "batch_size": 64}}
EARLY = {"monitor": "val_accuracy", "patience": 1, "min_delta": 1.0, "restore_best_weights": True}
"""No epoch can improve on the first by 1.0: the run stops after epoch 2 with epoch 1's weights."""
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Checkpoints (and best models) only when a run stops, whatever the machine's speed.
    with running_stack(tmp_path_factory.mktemp("evaluation"), checkpoint_seconds="3600") as running:
        yield running


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as http:
        yield http


@pytest.fixture(scope="module")
def early_stopped(client: httpx.Client, stack: Stack) -> dict[str, Any]:
    """A run that early stopping ended, its best weights restored."""
    training = {**DIGITS["training"], "epochs": 10, "early_stopping": EARLY}
    body = {**DIGITS, "training": training, "name": "early"}
    experiment_id = client.post("/experiments", json=body).json()["id"]
    experiment = wait_for_status(client, experiment_id, TERMINAL)
    assert experiment["status"] == "succeeded", stack.log_tail()
    return experiment


@pytest.fixture(scope="module")
def plain(client: httpx.Client) -> str:
    """A run without early stopping, submitted (ended only once a test waits for it)."""
    return str(client.post("/experiments", json={**DIGITS, "name": "plain"}).json()["id"])


def _test_size(client: httpx.Client) -> int:
    catalogue = client.get("/datasets").json()
    return int(next(item for item in catalogue if item["name"] == "digits")["test_size"])


def _accuracy(confusion: list[list[int]]) -> float:
    return sum(row[index] for index, row in enumerate(confusion)) / sum(map(sum, confusion))


def _epoch_of_model(client: httpx.Client, experiment_id: str, **params: str) -> int:
    response = client.get(f"/experiments/{experiment_id}/model", params=params)
    assert response.status_code == 200, response.text
    filename = response.headers["content-disposition"].split('filename="')[1]
    return int(filename.removesuffix('.keras"').rsplit("-epoch", 1)[1])


def _prediction(client: httpx.Client, experiment_id: str, **params: str) -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), color=128).save(buffer, format="PNG")
    files = {"file": ("grey.png", buffer.getvalue())}
    response = client.post(f"/experiments/{experiment_id}/predict", params=params, files=files)
    assert response.status_code == 200, response.text
    prediction: dict[str, Any] = response.json()
    return prediction


def _predicted_epoch(client: httpx.Client, experiment_id: str, **params: str) -> int:
    return int(_prediction(client, experiment_id, **params)["epoch"])


def test_evaluation_is_404_until_the_run_ends_then_adds_up(
    client: httpx.Client, stack: Stack, plain: str
) -> None:
    experiment_id = plain
    for path in ("evaluation", "evaluation.png"):
        early = client.get(f"/experiments/{experiment_id}/{path}")
        assert early.status_code == 404
        assert "its test set is evaluated once, when its run succeeds" in early.json()["detail"]
    assert wait_for_status(client, experiment_id, TERMINAL)["status"] == "succeeded"
    evaluation = client.get(f"/experiments/{experiment_id}/evaluation").json()
    assert evaluation["classes"] == [str(digit) for digit in range(10)]
    assert evaluation["weights"] == "last"
    confusion = evaluation["confusion"]
    total = sum(map(sum, confusion))
    assert total == _test_size(client)
    assert evaluation["per_class_accuracy"] == pytest.approx(
        [row[index] / sum(row) for index, row in enumerate(confusion)]
    )
    last = client.get(f"/experiments/{experiment_id}/history").json()["epochs"][-1]
    assert abs(_accuracy(confusion) - last["val_accuracy"]) < 1 / total  # the same predictions


def test_an_early_stopped_run_is_evaluated_with_its_restored_best_weights(
    client: httpx.Client, early_stopped: dict[str, Any]
) -> None:
    assert early_stopped["epochs_done"] == 2
    epochs = client.get(f"/experiments/{early_stopped['id']}/history").json()["epochs"]
    assert epochs[0]["val_accuracy"] != epochs[1]["val_accuracy"]
    evaluation = client.get(f"/experiments/{early_stopped['id']}/evaluation").json()
    assert evaluation["weights"] == "best"
    total = sum(map(sum, evaluation["confusion"]))
    assert abs(_accuracy(evaluation["confusion"]) - epochs[0]["val_accuracy"]) < 1 / total


def test_the_model_is_the_last_epoch_s_or_the_best_and_restored_best_is_the_default(
    client: httpx.Client, early_stopped: dict[str, Any]
) -> None:
    experiment_id = early_stopped["id"]  # epoch 1 is its best; early stopping restores it
    assert _epoch_of_model(client, experiment_id) == 1
    assert _epoch_of_model(client, experiment_id, weights="best") == 1
    assert _epoch_of_model(client, experiment_id, weights="last") == 2
    assert _predicted_epoch(client, experiment_id) == 1
    assert _predicted_epoch(client, experiment_id, weights="last") == 2
    # The last model holds epoch 2's own weights, saved before early stopping restored epoch 1's.
    best, last = (_prediction(client, experiment_id, weights=w) for w in ("best", "last"))
    assert best["probabilities"] != last["probabilities"]
    wrong = client.get(f"/experiments/{experiment_id}/model", params={"weights": "middle"})
    assert wrong.status_code == 422


def test_the_best_model_without_early_stopping_has_the_lowest_val_loss(
    client: httpx.Client, plain: str
) -> None:
    assert wait_for_status(client, plain, TERMINAL)["status"] == "succeeded"
    epochs = client.get(f"/experiments/{plain}/history").json()["epochs"]
    lowest = min(epochs, key=lambda row: row["val_loss"])["epoch"]
    assert _epoch_of_model(client, plain) == len(epochs)  # last, by default
    assert _epoch_of_model(client, plain, weights="best") == lowest
    assert _predicted_epoch(client, plain, weights="best") == lowest


def test_the_confusion_matrix_is_drawn_as_png_or_svg(
    client: httpx.Client, early_stopped: dict[str, Any]
) -> None:
    url = f"/experiments/{early_stopped['id']}/evaluation"
    png = client.get(f"{url}.png")
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(PNG_SIGNATURE)
    svg = client.get(f"{url}.svg")
    assert svg.headers["content-type"] == "image/svg+xml"
    for text in ("early: test set, best weights", "true class", "predicted class"):
        assert text in svg.text, text
    for name in client.get(url).json()["classes"]:
        assert svg.text.count(f">{name}<") >= 2, name  # on both axes
    assert client.get(f"{url}.gif").status_code == 422


def test_convlab_evaluation_prints_each_class(stack: Stack, early_stopped: dict[str, Any]) -> None:
    done = convlab(stack, "evaluation", early_stopped["id"])
    assert done.returncode == 0, done.stderr
    assert "accuracy" in done.stdout
    assert done.stdout.splitlines()[-1].endswith("right with the best weights")


def test_a_succeeded_run_whose_evaluation_failed_says_so(
    client: httpx.Client, stack: Stack, plain: str
) -> None:
    assert wait_for_status(client, plain, TERMINAL)["status"] == "succeeded"
    engine = get_engine(f"sqlite:///{Path(stack.env['CONVLAB_HOME']) / 'convlab.sqlite'}")
    with session_scope(engine) as session:  # as a worker leaves it when evaluating raised
        session.exec(delete(Evaluation).where(col(Evaluation.experiment_id) == plain))
    response = client.get(f"/experiments/{plain}/evaluation")
    assert response.status_code == 404
    assert "succeeded but its test set could not be evaluated" in response.json()["detail"]


def test_evaluation_of_an_unknown_experiment_is_404(client: httpx.Client) -> None:
    response = client.get("/experiments/nope/evaluation")
    assert response.status_code == 404
    assert response.json()["detail"] == "Experiment nope not found."


def test_the_best_model_is_stored_at_the_checkpoints_pace_not_at_every_improving_epoch(
    client: httpx.Client, stack: Stack
) -> None:
    body = {**DIGITS, "training": {"epochs": 12, "batch_size": 16}, "name": "paced"}
    experiment_id = client.post("/experiments", json=body).json()["id"]

    def improved_while_running() -> bool:
        epochs = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
        losses = [row["val_loss"] for row in epochs]
        return len(losses) >= 3 and min(losses[1:]) < losses[0]

    wait_for(improved_while_running, timeout=120, what="an improving epoch while running")
    engine = get_engine(f"sqlite:///{Path(stack.env['CONVLAB_HOME']) / 'convlab.sqlite'}")
    running = client.get(f"/experiments/{experiment_id}").json()
    assert running["status"] == "running"
    assert best_so_far(engine, experiment_id) is None  # kept in memory, not written yet
    assert wait_for_status(client, experiment_id, TERMINAL)["status"] == "succeeded"
    epochs = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
    lowest = min(epochs, key=lambda row: row["val_loss"])
    assert best_so_far(engine, experiment_id) == (lowest["epoch"], lowest["val_loss"])
