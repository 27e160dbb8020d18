"""Studies over HTTP, in process: expansion, validation, the comparison table, cancel, paging."""

import statistics
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from core.config import Settings
from models.status import Status
from models.studies import CHAPTER
from store.db import get_engine
from store.tables import Experiment, Study
from tests.services import Trainer

SMALL = {"dataset": {"name": "digits"}, "training": {"epochs": 2}}


def _stored(settings: Settings) -> tuple[int, int]:
    with Session(get_engine(settings.resolved_database_url)) as session:
        return len(session.exec(select(Study)).all()), len(session.exec(select(Experiment)).all())


def _study(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/studies", json=body)
    assert response.status_code == 201, response.json()
    assert response.headers["location"] == f"/studies/{response.json()['id']}"
    study: dict[str, Any] = response.json()
    return study


def test_chapter_template_runs_the_thirteen_presets_per_seed(client: TestClient) -> None:
    study = _study(client, {"template": "chapter", "seeds": [0, 1], **SMALL})
    assert study["variants"] == CHAPTER
    assert len(study["experiment_ids"]) == 26
    assert study["status"] == "queued"
    assert study["progress"]["queued"] == 26
    assert study["progress"]["epochs_total"] == 52
    listed = client.get("/experiments", params={"study_id": study["id"], "limit": 100}).json()
    experiments = listed["items"]
    assert len(experiments) == 26
    assert {(e["spec"]["preset"], e["spec"]["seed"]) for e in experiments} == {
        (preset, seed) for preset in CHAPTER for seed in (0, 1)
    }
    assert all(e["spec"]["dataset"]["name"] == "digits" for e in experiments)
    assert all(e["study_id"] == study["id"] for e in experiments)


def test_variants_merge_over_the_base_and_keep_their_order(client: TestClient) -> None:
    variants = [
        {"name": "wide", "model": {"dense_units": [256]}},
        {"name": "sgd", "optimizer": {"name": "sgd", "learning_rate": 0.05}},
        {"name": "dropout", "preset": "dropout"},
    ]
    study = _study(client, {"variants": variants, **SMALL, "model": {"l2": 0.001}})
    assert study["variants"] == ["wide", "sgd", "dropout"]
    specs = {
        e["name"]: e["spec"]
        for e in client.get("/experiments", params={"study_id": study["id"]}).json()["items"]
    }
    assert specs["wide, seed 0"]["model"]["dense_units"] == [256]
    assert specs["wide, seed 0"]["model"]["l2"] == 0.001
    assert specs["sgd, seed 0"]["optimizer"] == {"name": "sgd", "learning_rate": 0.05}
    assert specs["dropout, seed 0"]["model"]["dropout"] == 0.5


def test_grid_crosses_every_value(client: TestClient) -> None:
    grid = {"optimizer.name": ["sgd", "adam"], "model.batch_norm": [False, True]}
    study = _study(client, {"grid": grid, **SMALL})
    assert study["variants"] == [
        'optimizer.name="sgd", model.batch_norm=false',
        'optimizer.name="sgd", model.batch_norm=true',
        'optimizer.name="adam", model.batch_norm=false',
        'optimizer.name="adam", model.batch_norm=true',
    ]


def test_a_studys_experiments_inherit_its_priority(client: TestClient) -> None:
    study = _study(client, {"presets": ["base", "adam"], "seeds": [0, 1], "priority": "low"})
    assert study["priority"] == "low"
    members = client.get("/experiments", params={"study_id": study["id"]}).json()["items"]
    assert [e["priority"] for e in members] == ["low"] * 4
    assert sorted(e["queue_position"] for e in members) == [1, 2, 3, 4]  # nothing else waits


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"presets": ["base", "resnet"]}, ["body", "presets", 1]),
        ({"presets": []}, ["body", "presets"]),
        ({"grid": {"model.nonexistent": [1, 2]}}, ["body", "grid", "model.nonexistent"]),
        ({"grid": {"colour": ["red"]}}, ["body", "grid", "colour"]),
        ({"grid": {"training.epochs": [2, 10**9]}}, ["body", "grid", "training.epochs"]),
        ({"grid": {"model.dropout": []}}, ["body", "grid"]),
        (
            {"variants": [{"name": "x", "model": {"dropout": 2}}]},
            ["body", "variants", 0, "model", "dropout"],
        ),
        ({"variants": [{"name": "x"}, {"name": "x"}]}, ["body", "variants"]),
        ({"presets": ["base"], "training": {"epochs": 10**9}}, ["body", "training", "epochs"]),
        ({"presets": ["base"], "seeds": [1, 1]}, ["body", "seeds"]),
        ({"presets": ["base"], "seeds": []}, ["body", "seeds"]),
        ({"presets": ["base"] * 100, "seeds": list(range(20))}, ["body", "presets"]),
        ({"presets": ["base"], "template": "chapter"}, ["body"]),
        ({}, ["body"]),
        ({"search": {"n_trials": 10_000}}, ["body", "search", "n_trials"]),
        ({"template": "textbook"}, ["body", "template"]),
        ({"presets": ["base"], "priority": "urgent"}, ["body", "priority"]),
    ],
)
def test_bad_studies_are_422_naming_the_field_and_store_nothing(
    client: TestClient, settings: Settings, body: dict[str, Any], loc: list[Any]
) -> None:
    response = client.post("/studies", json={**SMALL, **body})
    assert response.status_code == 422
    assert loc in [error["loc"] for error in response.json()["detail"]], response.json()
    assert _stored(settings) == (0, 0)


def test_table_is_mean_and_sample_std_of_the_last_epochs(
    client: TestClient, trainer: Trainer
) -> None:
    study = _study(client, {"presets": ["base", "dropout"], "seeds": [0, 1, 2], **SMALL})
    experiments = client.get("/experiments", params={"study_id": study["id"]}).json()["items"]
    finals: dict[str, list[tuple[float, float]]] = {"base": [], "dropout": []}
    for index, experiment in enumerate(experiments):
        trainer.start(experiment["id"])
        accuracy, val_accuracy = 0.5 + index / 100, 0.4 + index / 50
        trainer.epoch(experiment["id"], 1, 2.0, 0.3, 2.1, 0.2, 1.5)
        trainer.epoch(experiment["id"], 2, 1.0 + index, accuracy, 1.2, val_accuracy, 0.5)
        trainer.finish(experiment["id"], Status.succeeded)
        finals[experiment["spec"]["preset"]].append((accuracy, val_accuracy))
    table = client.get(f"/studies/{study['id']}/table").json()["table"]
    assert [row["variant"] for row in table] == ["base", "dropout"]
    for row in table:
        accuracies = [accuracy for accuracy, _ in finals[row["variant"]]]
        assert row["runs"] == 3
        assert row["train_accuracy"]["mean"] == pytest.approx(statistics.fmean(accuracies))
        assert row["train_accuracy"]["std"] == pytest.approx(statistics.stdev(accuracies))
        assert row["best_epoch"] == {"mean": 2.0, "std": 0.0}
        assert row["epochs_run"]["mean"] == 2.0
        assert row["seconds_per_epoch"]["mean"] == pytest.approx(1.0)
    summary = client.get(f"/studies/{study['id']}").json()
    assert summary["status"] == "succeeded"
    assert summary["table"] == table
    markdown = client.get(f"/studies/{study['id']}/table", params={"format": "markdown"}).text
    assert markdown.splitlines()[0].startswith("| Variant | Runs | Train accuracy | Test accuracy")
    base = table[0]["train_accuracy"]
    assert f"| base | 3 | {base['mean']:.3f} ± {base['std']:.3f} |" in markdown
    csv = client.get(f"/studies/{study['id']}/table", params={"format": "csv"}).text
    assert csv.splitlines()[0].startswith("variant,runs,train_accuracy_mean,train_accuracy_std")
    assert len(csv.splitlines()) == 3


def test_cancel_stops_every_unfinished_experiment(client: TestClient, trainer: Trainer) -> None:
    study = _study(client, {"presets": ["base", "l2"], "seeds": [0, 1], **SMALL})
    first, second, *_ = study["experiment_ids"]
    trainer.start(first)
    trainer.epoch(first, 1, 2.0, 0.3, 2.1, 0.2, 1.5)
    trainer.start(second)
    trainer.finish(second, Status.succeeded)
    response = client.post(f"/studies/{study['id']}/cancel")
    assert response.status_code == 202
    statuses = [
        client.get(f"/experiments/{experiment_id}").json()
        for experiment_id in study["experiment_ids"]
    ]
    assert [s["status"] for s in statuses] == ["running", "succeeded", "cancelled", "cancelled"]
    assert statuses[0]["epochs_done"] == 1  # a running one keeps its epochs and stops itself
    with Session(trainer.engine) as session:
        running = session.get(Experiment, first)
        assert running is not None and running.cancel_requested


def test_studies_list_newest_first_in_pages(client: TestClient) -> None:
    ids = [_study(client, {"presets": ["base"], **SMALL})["id"] for _ in range(3)]
    first = client.get("/studies", params={"limit": 2}).json()
    second = client.get("/studies", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [s["id"] for s in first["items"] + second["items"]] == ids[::-1]
    assert second["next_cursor"] is None


def test_compare_builds_the_table_for_any_experiments(client: TestClient, trainer: Trainer) -> None:
    ids = [
        client.post("/experiments", json={**SMALL, "name": name}).json()["id"]
        for name in ("first", "second")
    ]
    for index, experiment_id in enumerate(ids):
        trainer.start(experiment_id)
        trainer.epoch(experiment_id, 1, 1.0, 0.6 + index / 10, 1.1, 0.55, 0.5)
    table = client.get("/compare", params={"ids": ",".join(ids)}).json()["table"]
    assert [(row["variant"], row["train_accuracy"]["mean"]) for row in table] == [
        ("first", 0.6),
        ("second", 0.7),
    ]
    assert table[0]["train_accuracy"]["std"] is None
    assert [(row["experiment_id"], row["name"], row["status"]) for row in table] == [
        (ids[0], "first", "running"),
        (ids[1], "second", "running"),
    ]
    assert client.get("/compare", params={"ids": f"{ids[0]},nope"}).status_code == 404
    assert client.get("/compare", params={"ids": ","}).status_code == 422


def test_unknown_study_is_404(client: TestClient) -> None:
    for method, path in [
        ("GET", "/studies/x"),
        ("GET", "/studies/x/table"),
        ("POST", "/studies/x/cancel"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404
        assert response.json()["detail"] == "Study x not found."
