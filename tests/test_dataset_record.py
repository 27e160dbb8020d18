"""A run keeps what it trained on: the dataset's identity is recorded when the run is
submitted, and predictions, model downloads and evaluation use that record whatever the
dataset's name holds later; continue and rerun refuse changed data unless a rerun names the
dataset, a worker refuses a run whose data changed while it waited, and an upload that
experiments use is deleted only with ``force=true``."""

import hashlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import null, update
from sqlmodel import Session, col

from core.config import Settings
from models.status import Status
from store.db import get_engine
from store.tables import Experiment
from tests.services import Stack, Trainer, server_stack, wait_for_status
from tests.test_custom_datasets import CORNERS, npz, quadrant_folder, quadrants, upload

SMALL_NET = {
    "model": {"conv_filters": [16, 32], "dense_units": [32]},
    "optimizer": {"name": "adam", "learning_rate": 0.003},
    "training": {"epochs": 3, "batch_size": 32},
}
ENDED = {"succeeded", "failed", "cancelled"}


def corners(n_train: int = 400, n_test: int = 100, **changes: Any) -> bytes:
    """An upload of the quadrants pictures (8x8 grayscale, one class per bright corner)."""
    x_train, y_train = quadrants(n_train, 10)
    x_test, y_test = quadrants(n_test, 11)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return npz(**(arrays | {"class_names": np.array(CORNERS)} | changes))


def png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


TOP_LEFT = png(quadrants(1, 99)[0][0])
"""A picture of the first class (top-left), as the uploads and folders here hold them."""


def predict(http: httpx.Client, experiment_id: str) -> httpx.Response:
    files = {"file": ("top-left.png", TOP_LEFT)}
    return http.post(f"/experiments/{experiment_id}/predict", files=files)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API and a worker on PostgreSQL and Redis."""
    with server_stack(tmp_path_factory.mktemp("dataset-record")) as up:
        yield up


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


def data_dir(stack: Stack) -> Path:
    return Path(stack.env["CONVLAB_HOME"]) / "data"


def trained(http: httpx.Client, stack: Stack, dataset: str, **spec: Any) -> str:
    """The id of a run of ``SMALL_NET`` on ``dataset`` that succeeded."""
    body = {"dataset": {"name": dataset}, **SMALL_NET, **spec}
    experiment_id = http.post("/experiments", json=body).json()["id"]
    done = wait_for_status(http, experiment_id, ENDED, timeout=240)
    assert done["status"] == "succeeded", (done["error"], stack.log_tail())
    return experiment_id


def test_an_experiment_shows_the_record_of_its_dataset(http: httpx.Client, stack: Stack) -> None:
    data = corners(n_train=40, n_test=12)
    assert upload(http, "recorded", data).status_code == 201
    quadrant_folder(data_dir(stack) / "custom" / "recorded-folder", 8, 4)
    ids = [
        http.post("/experiments", json={"dataset": {"name": name}, **SMALL_NET}).json()["id"]
        for name in ("recorded", "recorded-folder", "digits")
    ]
    for experiment_id in ids:
        http.post(f"/experiments/{experiment_id}/cancel")

    upload_record, folder_record, digits_record = (
        http.get(f"/experiments/{experiment_id}").json()["dataset"] for experiment_id in ids
    )

    assert upload_record == {
        "name": "recorded",
        "kind": "upload",
        "shape": [8, 8, 1],
        "classes": 4,
        "class_names": list(CORNERS),
        "train_count": 40,
        "test_count": 12,
        "digest": hashlib.sha256(data).hexdigest(),
    }
    assert folder_record | {"digest": None} == {
        "name": "recorded-folder",
        "kind": "folder",
        "shape": [8, 8, 3],
        "classes": 4,
        "class_names": sorted(CORNERS),
        "train_count": 8,
        "test_count": 4,
        "digest": None,
    }
    assert digits_record["kind"] == "built-in"
    assert (digits_record["shape"], digits_record["train_count"]) == ([8, 8, 1], 1437)
    assert len(folder_record["digest"]) == len(digits_record["digest"]) == 64


@pytest.mark.slow
def test_an_upload_replaced_by_another_shape_leaves_its_runs_predicting_their_classes(
    http: httpx.Client, stack: Stack
) -> None:
    assert upload(http, "shifting", corners()).status_code == 201
    run = trained(http, stack, "shifting")

    refused = http.delete("/datasets/shifting")
    forced = http.delete("/datasets/shifting", params={"force": "true"})
    gone = http.post(f"/experiments/{run}/continue", json={"epochs": 1})
    x, y = quadrants(40, 3, side=16)
    colour = np.repeat(x[..., np.newaxis], 3, axis=3)
    other = npz(x_train=colour, y_train=y % 3, x_test=colour, y_test=y % 3)
    assert upload(http, "shifting", other).status_code == 201
    model = http.get(f"/experiments/{run}/model")
    predicted = predict(http, run)
    continued = http.post(f"/experiments/{run}/continue", json={"epochs": 1})
    rerun = http.post("/experiments", json={"from": run})
    on_new_data = http.post("/experiments", json={"from": run, "dataset": {"name": "shifting"}})

    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"Dataset shifting is used by 1 experiment(s) ({run}); delete them first, or delete the "
        "dataset with force=true: their trained models stay usable for prediction, but they "
        "cannot be continued or rerun on it."
    )
    assert forced.status_code == 204
    assert gone.status_code == 422
    [error] = gone.json()["detail"]
    assert error["loc"] == ["body", "dataset", "name"]
    assert error["msg"].startswith("Dataset shifting was deleted at ")
    assert model.status_code == 200
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["top"] == "top-left"
    assert sorted(p["label"] for p in predicted.json()["probabilities"]) == sorted(CORNERS)
    changed = (
        "its images are 16x16x3, not 8x8x1; it has 3 classes, not 4; it holds 40 training and "
        "40 test images, not 400 and 100"
    )
    assert continued.status_code == 409
    assert continued.json()["detail"].startswith(
        f"Dataset shifting changed since experiment {run} was submitted: {changed}; its model "
        "cannot train on other data."
    )
    assert rerun.status_code == 409
    assert rerun.json()["detail"] == (
        f"Dataset shifting changed since experiment {run} was submitted: {changed}. To rerun it "
        'on the data the name holds now, name the dataset: "dataset": {"name": "shifting"}.'
    )
    assert on_new_data.status_code == 201, on_new_data.text
    assert on_new_data.json()["dataset"]["shape"] == [16, 16, 3]
    http.post(f"/experiments/{on_new_data.json()['id']}/cancel")


@pytest.mark.slow
def test_an_upload_replaced_by_other_classes_leaves_its_runs_naming_their_own(
    http: httpx.Client, stack: Stack
) -> None:
    assert upload(http, "renamed", corners()).status_code == 201
    run = trained(http, stack, "renamed")
    http.delete("/datasets/renamed", params={"force": "true"})
    compass = np.array(["north-west", "north-east", "south-west", "south-east"])
    assert upload(http, "renamed", corners(class_names=compass)).status_code == 201

    predicted = predict(http, run)
    evaluation = http.get(f"/experiments/{run}/evaluation")

    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["top"] == "top-left"
    assert sorted(p["label"] for p in predicted.json()["probabilities"]) == sorted(CORNERS)
    assert evaluation.json()["classes"] == list(CORNERS)


@pytest.mark.slow
def test_a_folder_that_gains_a_class_leaves_its_runs_serving_and_refuses_continuing(
    http: httpx.Client, stack: Stack
) -> None:
    root = data_dir(stack) / "custom" / "growing"
    quadrant_folder(root, 400, 100)
    run = trained(http, stack, "growing")
    shutil.copytree(root / "test" / "top-left", root / "test" / "middle")  # not in train/ yet

    half_model = http.get(f"/experiments/{run}/model")
    half_predicted = predict(http, run)
    shutil.copytree(root / "train" / "top-left", root / "train" / "middle")
    model = http.get(f"/experiments/{run}/model")
    predicted = predict(http, run)
    continued = http.post(f"/experiments/{run}/continue", json={"epochs": 1})

    assert (half_model.status_code, half_predicted.status_code) == (200, 200)
    assert model.status_code == 200, model.text
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["top"] == "top-left"  # "middle" sorts where top-left was
    assert sorted(p["label"] for p in predicted.json()["probabilities"]) == sorted(CORNERS)
    assert continued.status_code == 409
    assert continued.json()["detail"].startswith(
        f"Dataset growing changed since experiment {run} was submitted: its classes changed: "
        "'middle' added; it holds 500 training and 125 test images, not 400 and 100; its model "
        "cannot train on other data."
    )


@pytest.mark.slow
def test_a_run_whose_pictures_changed_while_it_waited_fails_saying_so(
    http: httpx.Client, stack: Stack
) -> None:
    root = data_dir(stack) / "custom" / "drifting"
    quadrant_folder(root, 40, 12)
    body = {"dataset": {"name": "drifting"}, **SMALL_NET, "training": {"epochs": 1000}}
    experiment_id = http.post("/experiments", json=body).json()["id"]
    http.post(f"/experiments/{experiment_id}/pause")
    wait_for_status(http, experiment_id, {"paused"})
    first = sorted((root / "train" / "top-left").iterdir())[0]
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(first)  # same size, other pixels

    http.post(f"/experiments/{experiment_id}/resume")
    done = wait_for_status(http, experiment_id, ENDED, timeout=120)

    assert done["status"] == "failed"
    assert done["error"].startswith(
        "Dataset drifting changed since this run was submitted: its contents differ (digest "
    )
    assert done["error"].endswith(
        "), with the same shape, classes and counts; rerun it to train on the new data."
    )


# Deleting an upload, through an in-process API (no worker)


def test_delete_is_a_409_while_experiments_use_an_upload_until_they_are_deleted(
    client: TestClient, trainer: Trainer
) -> None:
    upload(client, "kept", corners(n_train=40, n_test=12))
    body = {"dataset": {"name": "kept"}, "model": {"conv_filters": [8]}}
    finished, waiting = (client.post("/experiments", json=body).json()["id"] for _ in range(2))
    trainer.start(finished)
    trainer.finish(finished, Status.succeeded)

    unfinished = client.delete("/datasets/kept", params={"force": "true"})
    client.post(f"/experiments/{waiting}/cancel")
    used = client.delete("/datasets/kept")
    client.delete(f"/experiments/{finished}")
    client.delete(f"/experiments/{waiting}")
    unused = client.delete("/datasets/kept")

    assert unfinished.status_code == 409
    assert unfinished.json()["detail"] == (
        f"Dataset kept is used by 1 unfinished experiment(s) ({waiting}); cancel them or let "
        "them finish, then delete it."
    )
    assert used.status_code == 409
    assert used.json()["detail"].startswith("Dataset kept is used by 2 experiment(s) (")
    assert unused.status_code == 204


def test_an_earlier_upload_of_the_name_does_not_hold_up_deleting_the_new_one(
    client: TestClient, trainer: Trainer
) -> None:
    upload(client, "again", corners(n_train=40, n_test=12))
    old = client.post("/experiments", json={"dataset": {"name": "again"}}).json()["id"]
    trainer.start(old)
    trainer.finish(old, Status.succeeded)
    client.delete("/datasets/again", params={"force": "true"})
    upload(client, "again", corners(n_train=44, n_test=12))

    assert client.delete("/datasets/again").status_code == 204


def test_an_experiment_from_before_records_holds_up_deleting_the_upload_it_came_after(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    upload(client, "older", corners(n_train=40, n_test=12))
    run = client.post("/experiments", json={"dataset": {"name": "older"}}).json()["id"]
    trainer.start(run)
    trainer.finish(run, Status.succeeded)
    with Session(
        get_engine(settings.resolved_database_url)
    ) as session:  # as migration 0012 left it
        session.exec(update(Experiment).where(col(Experiment.id) == run).values(dataset=null()))
        session.commit()

    refused = client.delete("/datasets/older")

    assert client.get(f"/experiments/{run}").json()["dataset"] is None
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(f"Dataset older is used by 1 experiment(s) ({run})")
