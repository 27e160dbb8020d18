"""A newcomer's first hour, in process: a dataset missing from the server's data directory is
refused at submit, a typo gets the name it meant, and the dashboard's short ids work in URLs."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, col

from api.main import create_app
from core.config import Settings
from models.accelerator import CPU
from models.datasets import DATASETS, unavailable_sentence
from models.status import Status
from store.tables import Experiment, Study
from store.workers import beat
from tests.events import parse_events
from tests.services import Trainer, postgres_database

DIGITS = {"dataset": {"name": "digits"}, "training": {"epochs": 2}}


def _refusal(response: Any) -> tuple[list[Any], str]:
    """The location and sentence of a 422's one error."""
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    return error["loc"], error["msg"]


# Datasets


@pytest.fixture
def data_dir(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server's data directory, there and empty, and an empty Keras cache."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-cache"))
    settings.resolved_data_dir.mkdir(parents=True)
    return settings.resolved_data_dir


def test_an_experiment_on_a_dataset_the_server_lacks_is_a_422_saying_where_to_put_it(
    client: TestClient, data_dir: Path
) -> None:
    response = client.post("/experiments", json={"dataset": {"name": "mnist"}})
    loc, message = _refusal(response)
    assert loc == ["body", "dataset", "name"]
    assert message == unavailable_sentence(DATASETS["mnist"], data_dir) + "."
    assert message == (
        "Dataset mnist is not available: put mnist.npz (from "
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz) in "
        f"{data_dir.resolve()}, or give this machine internet access so Keras can download it."
    )
    _, cifar = _refusal(client.post("/experiments", json={}))  # cifar10, the default
    assert "put cifar-10-python.tar.gz (from https://www.cs.toronto.edu/" in cifar
    assert client.get("/experiments").json()["items"] == []
    assert client.post("/experiments", json=DIGITS).status_code == 201
    (data_dir / "mnist.npz").write_bytes(b"the worker checks the contents")
    assert client.post("/experiments", json={"dataset": {"name": "mnist"}}).status_code == 201


def test_without_a_data_directory_the_api_leaves_the_dataset_to_the_worker(
    client: TestClient, settings: Settings
) -> None:
    """The API may run where the data is not (another machine): it checks only what it sees."""
    assert not settings.resolved_data_dir.exists()
    assert client.post("/experiments", json={"dataset": {"name": "mnist"}}).status_code == 201


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"presets": ["base", "dropout"]}, ["body", "dataset", "name"]),
        (
            {**DIGITS, "variants": [{"name": "a"}, {"name": "b", "dataset": {"name": "mnist"}}]},
            ["body", "variants", 1, "dataset", "name"],
        ),
        (
            {**DIGITS, "grid": {"dataset.name": ["digits", "mnist"]}},
            ["body", "grid", "dataset.name"],
        ),
        (
            {
                **DIGITS,
                "search": {
                    "space": {
                        "dataset.name": {"type": "categorical", "choices": ["digits", "mnist"]}
                    },
                    "n_trials": 2,
                },
            },
            ["body", "search", "space", "dataset.name"],
        ),
        (
            {
                "dataset": {"name": "mnist"},
                "search": {
                    "space": {"model.dropout": {"type": "float", "low": 0.0, "high": 0.5}},
                    "n_trials": 2,
                },
            },
            ["body", "dataset", "name"],
        ),
    ],
)
def test_a_study_needing_a_dataset_the_server_lacks_is_a_422_at_the_field_that_chose_it(
    client: TestClient, data_dir: Path, body: dict[str, Any], loc: list[Any]
) -> None:
    actual, message = _refusal(client.post("/studies", json=body))
    assert actual == loc
    assert message.startswith("Dataset ") and message.endswith("so Keras can download it.")
    assert client.get("/studies").json()["items"] == []
    assert client.get("/experiments").json()["items"] == []


def test_a_study_on_datasets_the_server_has_is_created(client: TestClient, data_dir: Path) -> None:
    (data_dir / "mnist.npz").write_bytes(b"")
    body = {**DIGITS, "grid": {"dataset.name": ["digits", "mnist"]}}
    assert client.post("/studies", json=body).status_code == 201


# Did you mean


@pytest.mark.parametrize(
    ("body", "loc", "meant"),
    [
        ({"preset": "batch_nrom"}, ["body", "preset"], "batch_norm"),
        ({"training": {"epoch": 3}}, ["body", "training", "epoch"], "epochs"),
        (
            {"optimizer": {"learning_rat": 0.1}},
            ["body", "optimizer", "learning_rat"],
            "learning_rate",
        ),
        ({"model": {"batchnorm": True}}, ["body", "model", "batchnorm"], "batch_norm"),
    ],
)
def test_a_typo_is_a_422_that_names_what_was_meant(
    client: TestClient, body: dict[str, Any], loc: list[Any], meant: str
) -> None:
    actual, message = _refusal(client.post("/experiments", json={**DIGITS, **body}))
    assert actual == loc
    assert f"did you mean `{meant}`?" in message


def test_a_studys_preset_typo_names_the_preset_meant_at_its_place_in_the_list(
    client: TestClient,
) -> None:
    response = client.post("/studies", json={**DIGITS, "presets": ["dropout", "batch_nrom"]})
    loc, message = _refusal(response)
    assert loc == ["body", "presets", 1]
    assert "did you mean `batch_norm`?" in message


# Id prefixes


def _rename(trainer: Trainer, table: type[Experiment] | type[Study], old: str, new: str) -> None:
    with Session(trainer.engine) as session:
        session.exec(update(table).where(col(table.id) == old).values(id=new))
        session.commit()


def _prefixes_resolve(client: TestClient, trainer: Trainer) -> None:
    first, second = (client.post("/experiments", json=DIGITS).json()["id"] for _ in range(2))
    twins = ["abcdef0" + "1" * 25, "abcdef1" + "2" * 25]
    for old, new in zip((first, second), twins, strict=True):
        _rename(trainer, Experiment, old, new)
    assert client.get(f"/experiments/{twins[0][:8]}").json()["id"] == twins[0]
    assert client.get(f"/experiments/{twins[1][:7]}").json()["id"] == twins[1]
    ambiguous = client.get("/experiments/abcdef")
    assert ambiguous.status_code == 409
    assert ambiguous.json()["detail"] == (
        f"Experiment id abcdef is ambiguous: it starts {twins[0]}, {twins[1]}; give more of the id."
    )
    for unknown in ("abcde", "abcdef2", "0123456789", "ABCDEF0"):
        assert client.get(f"/experiments/{unknown}").status_code == 404, unknown
    compared = client.get("/compare", params={"ids": f"{twins[0][:6]}0,{twins[1][:8]}"})
    assert [row["variant"] for row in compared.json()["table"]] == twins


def test_a_unique_prefix_names_an_experiment_and_an_ambiguous_one_is_a_409(
    client: TestClient, trainer: Trainer
) -> None:
    _prefixes_resolve(client, trainer)


@pytest.fixture
def postgres_client(tmp_path: Path) -> Iterator[tuple[TestClient, Trainer]]:
    with postgres_database() as url:
        settings = Settings(home=tmp_path, database_url=url)
        with TestClient(create_app(settings)) as client:
            yield client, Trainer(settings)


def test_prefixes_resolve_on_postgresql_too(
    postgres_client: tuple[TestClient, Trainer],
) -> None:
    """The prefix is a range of the primary key's index, in PostgreSQL's text order."""
    _prefixes_resolve(*postgres_client)


def test_every_route_of_an_experiment_and_a_study_takes_a_prefix(
    client: TestClient, trainer: Trainer
) -> None:
    experiment_id = client.post("/experiments", json=DIGITS).json()["id"]
    short = experiment_id[:8]
    assert client.patch(f"/experiments/{short}", json={"name": "short"}).json()["name"] == "short"
    trainer.start(experiment_id)
    trainer.epoch(experiment_id, 1, 1.0, 0.5, 1.0, 0.5, 0.1)
    trainer.finish(experiment_id, Status.succeeded)
    with client.stream("GET", f"/experiments/{short}/events") as response:
        events = list(parse_events(response.iter_lines()))
    assert [event.get("id") for event in events] == ["1", None]
    assert events[-1]["data"]["experiment_id"] == experiment_id
    assert client.get(f"/experiments/{short}/plot.svg").status_code == 200
    history = f"/experiments/{short}/history"
    for params in ({}, {"lineage": "true"}):
        assert [row["epoch"] for row in client.get(history, params=params).json()["epochs"]] == [1]
    assert client.get(history, params={"format": "csv"}).text.splitlines()[1].startswith("1,1.0,")
    rerun = client.post("/experiments", json={"from": short, "training": {"epochs": 3}}).json()
    assert rerun["parent_id"] == experiment_id
    compared = client.get("/compare", params={"ids": f"{short},{experiment_id}"}).json()
    assert [row["variant"] for row in compared["table"]] == ["short"]

    study = client.post("/studies", json={**DIGITS, "presets": ["base"]}).json()
    short = study["id"][:6]
    assert client.get(f"/studies/{short}").json()["id"] == study["id"]
    assert client.get(f"/studies/{short}/table").status_code == 200
    with client.stream("GET", f"/studies/{short}/events") as response:
        assert response.status_code == 200
        cancelled = client.post(f"/studies/{short}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert client.get(f"/studies/{study['id'][:5]}").status_code == 404


# Wrong URLs


@pytest.mark.parametrize("path", ["/dashboard", "/api/experiments", "/experiments/x/y/z"])
def test_an_unknown_path_is_a_404_pointing_to_the_dashboard_and_the_reference(
    client: TestClient, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {
        "detail": f"Nothing is served at {path}: the dashboard is at /, and the API reference, "
        "with every path the API serves, at /docs."
    }
    assert client.get("/").status_code == client.get("/docs").status_code == 200


def test_a_routes_own_404_keeps_its_sentence(client: TestClient) -> None:
    missing = client.get(f"/experiments/{'0' * 32}")
    assert (missing.status_code, missing.json()) == (
        404,
        {"detail": f"Experiment {'0' * 32} not found."},
    )


# No worker running


def test_ready_and_a_queued_run_say_when_no_worker_has_been_heard_from(
    client: TestClient, trainer: Trainer
) -> None:
    alone = client.get("/ready")
    assert alone.status_code == 200  # the API serves and runs queue: it is ready
    assert alone.json() == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "workers": 0,
        "note": "no worker has been heard from; start one with make up",
    }
    waiting = client.post("/experiments", json=DIGITS).json()
    assert (waiting["queue_position"], waiting["workers_up"]) == (1, 0)
    listed = client.get("/experiments").json()["items"]
    assert [(item["id"], item["workers_up"]) for item in listed] == [(waiting["id"], 0)]

    beat(trainer.engine, "worker-1", host="here", pid=1, accelerator=CPU)
    heard = client.get("/ready").json()
    assert (heard["workers"], heard["note"]) == (1, None)
    client.post("/experiments", json=DIGITS)  # another run queued: a new forecast
    assert client.get(f"/experiments/{waiting['id']}").json()["workers_up"] == 1
    trainer.start(waiting["id"])
    running = client.get(f"/experiments/{waiting['id']}").json()
    assert (running["queue_position"], running["workers_up"]) == (None, None)
