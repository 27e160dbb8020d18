"""The HTTP contract, in process, on a fresh SQLite database and SQLite broker (no worker)."""

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from core.config import Settings
from models.status import Status
from store.db import get_engine
from store.tables import Experiment
from tests.services import Trainer

DIGITS_RUN = {"preset": "base", "dataset": {"name": "digits"}, "training": {"epochs": 3}}


def _stored_count(settings: Settings) -> int:
    with Session(get_engine(settings.resolved_database_url)) as session:
        return len(session.exec(select(Experiment)).all())


def test_submit_returns_201_with_location_and_the_resolved_spec(client: TestClient) -> None:
    response = client.post("/experiments", json={**DIGITS_RUN, "preset": "dropout", "name": "d"})
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/experiments/{body['id']}"
    assert body["status"] == "queued"
    assert body["name"] == "d"
    assert body["spec"]["model"]["dropout"] == 0.5
    assert body["spec"]["training"] == {
        "epochs": 3, "batch_size": 1024, "early_stopping": None, "validation_split": None,
        "label_smoothing": 0.0, "lr_schedule": None, "deterministic": False,
    }  # fmt: skip
    assert (body["epochs_done"], body["epochs_total"], body["final"]) == (0, 3, None)
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")
    assert client.get(response.headers["location"]).json() == body


def test_submit_defaults_to_the_base_preset(client: TestClient) -> None:
    body = client.post("/experiments", json={}).json()
    assert body["spec"]["preset"] == "base"
    assert body["spec"]["dataset"]["name"] == "cifar10"


def test_submit_rejects_invalid_bodies_naming_the_field_and_stores_nothing(
    client: TestClient, settings: Settings
) -> None:
    cases = [
        ({"training": {"epochs": 10**9}}, ["body", "training", "epochs"]),
        ({"model": {"conv_filters": [10**6]}}, ["body", "model", "conv_filters", 0]),
        ({"optimizer": {"name": "sgd", "beta_1": 0.9}}, ["body", "optimizer", "beta_1"]),
        ({"preset": "resnet"}, ["body", "preset"]),
        ({"colour": "blue"}, ["body", "colour"]),
        ({"seed": "1"}, ["body", "seed"]),
        ({"name": "x" * 201}, ["body", "name"]),
        ({"training": "fast"}, ["body", "training"]),
    ]
    for body, loc in cases:
        response = client.post("/experiments", json=body)
        assert response.status_code == 422, body
        assert loc in [error["loc"] for error in response.json()["detail"]], response.json()
    not_json = client.post(
        "/experiments", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    assert _stored_count(settings) == 0


def test_unknown_ids_are_404_with_a_sentence(client: TestClient) -> None:
    for method, path in [
        ("GET", "/experiments/nope"),
        ("GET", "/experiments/nope/history"),
        ("POST", "/experiments/nope/cancel"),
        ("DELETE", "/experiments/nope"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404
        assert response.json()["detail"] == "Experiment nope not found."


def test_cancel_of_a_queued_experiment_is_immediate_and_final(client: TestClient) -> None:
    experiment_id = client.post("/experiments", json=DIGITS_RUN).json()["id"]
    response = client.post(f"/experiments/{experiment_id}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    again = client.post(f"/experiments/{experiment_id}/cancel")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["detail"]


def test_cancel_of_a_running_experiment_sets_the_flag_and_keeps_it_running(
    client: TestClient, settings: Settings, trainer: Trainer
) -> None:
    experiment_id = client.post("/experiments", json=DIGITS_RUN).json()["id"]
    trainer.start(experiment_id)
    assert client.post(f"/experiments/{experiment_id}/cancel").json()["status"] == "running"
    with Session(get_engine(settings.resolved_database_url)) as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None and experiment.cancel_requested


def test_delete_refuses_active_experiments_and_removes_finished_ones(
    client: TestClient, trainer: Trainer
) -> None:
    experiment_id = client.post("/experiments", json=DIGITS_RUN).json()["id"]
    refused = client.delete(f"/experiments/{experiment_id}")
    assert refused.status_code == 409
    assert "cancel it before deleting" in refused.json()["detail"]
    trainer.start(experiment_id)
    assert client.delete(f"/experiments/{experiment_id}").status_code == 409
    trainer.epoch(experiment_id, 1, 1.0, 0.5, 1.1, 0.4, 1)
    trainer.finish(experiment_id, Status.succeeded)
    kept = client.get(f"/experiments/{experiment_id}/history")  # a finished one's is kept
    assert kept.json()["status"] == "succeeded"
    assert client.delete(f"/experiments/{experiment_id}").status_code == 204
    assert client.get(f"/experiments/{experiment_id}").status_code == 404
    assert client.get(f"/experiments/{experiment_id}/history").status_code == 404


def test_history_serves_json_since_and_csv(client: TestClient, trainer: Trainer) -> None:
    experiment_id = client.post("/experiments", json=DIGITS_RUN).json()["id"]
    trainer.start(experiment_id)
    for epoch, (accuracy, val_accuracy) in enumerate([(0.3, 0.4), (0.6, 0.7), (0.8, 0.65)], 1):
        trainer.epoch(experiment_id, epoch, 2.0 / epoch, accuracy, 1.5 / epoch, val_accuracy, 0.25)
    body = client.get(f"/experiments/{experiment_id}/history").json()
    assert [row["epoch"] for row in body["epochs"]] == [1, 2, 3]
    assert body["epochs"][1] == {
        "epoch": 2, "loss": 1.0, "accuracy": 0.6, "val_loss": 0.75, "val_accuracy": 0.7,
        "seconds": 0.25, "learning_rate": None,
    }  # fmt: skip
    since = client.get(f"/experiments/{experiment_id}/history", params={"since": 2}).json()
    assert [row["epoch"] for row in since["epochs"]] == [3]
    csv = client.get(f"/experiments/{experiment_id}/history?format=csv")
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0] == "epoch,loss,accuracy,val_loss,val_accuracy,seconds,learning_rate"
    assert lines[1] == "1,2.0,0.3,1.5,0.4,0.25,"
    by_accept = client.get(f"/experiments/{experiment_id}/history", headers={"accept": "text/csv"})
    assert by_accept.text == csv.text
    experiment = client.get(f"/experiments/{experiment_id}").json()
    assert experiment["epochs_done"] == 3
    assert experiment["final"] == {
        "accuracy": 0.8,
        "loss": 2.0 / 3,
        "val_accuracy": 0.65,
        "val_loss": 0.5,
    }
    assert experiment["best"] == {"epoch": 2, "val_accuracy": 0.7, "val_loss": 0.75}
    trainer.finish(experiment_id, Status.succeeded)
    finished = client.get(f"/experiments/{experiment_id}/history")  # built once, then kept
    assert finished.headers["content-type"] == "application/json"
    assert finished.json() == body | {"status": "succeeded"}
    assert client.get(f"/experiments/{experiment_id}/history").json() == finished.json()


def test_recording_an_epoch_twice_keeps_one_row(client: TestClient, trainer: Trainer) -> None:
    experiment_id = client.post("/experiments", json=DIGITS_RUN).json()["id"]
    trainer.start(experiment_id)
    trainer.epoch(experiment_id, 1, 2.0, 0.3, 1.9, 0.35, 1.0)
    trainer.epoch(experiment_id, 1, 1.8, 0.4, 1.7, 0.45, 1.1)
    epochs = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
    assert len(epochs) == 1
    assert epochs[0]["accuracy"] == 0.4


def test_list_pages_newest_first_and_filters(client: TestClient) -> None:
    ids = [
        client.post("/experiments", json={**DIGITS_RUN, "preset": preset}).json()["id"]
        for preset in ["base", "dropout", "base", "l2", "base"]
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/experiments", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    bases = client.get("/experiments", params={"preset": "base"}).json()["items"]
    assert [item["id"] for item in bases] == [ids[4], ids[2], ids[0]]
    client.post(f"/experiments/{ids[1]}/cancel")
    cancelled = client.get("/experiments", params={"status": "cancelled"}).json()["items"]
    assert [item["id"] for item in cancelled] == [ids[1]]


def test_list_rejects_bad_query_parameters_naming_them(client: TestClient) -> None:
    for params, loc in [
        ({"limit": 501}, ["query", "limit"]),
        ({"status": "done"}, ["query", "status"]),
        ({"cursor": "not-a-cursor"}, ["query", "cursor"]),
    ]:
        response = client.get("/experiments", params=params)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == loc


def test_presets_list_the_chapter_variants_and_beyond_with_specs(client: TestClient) -> None:
    presets = client.get("/presets").json()
    assert [preset["name"] for preset in presets][13:] == ["augment", "improved"]
    by_name = {preset["name"]: preset for preset in presets}
    assert by_name["batch_norm"]["spec"]["model"]["batch_norm"] is True
    assert all(preset["description"] for preset in presets)


def test_datasets_report_availability_from_the_data_dir(
    client: TestClient, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-cache"))
    datasets = {dataset["name"]: dataset for dataset in client.get("/datasets").json()}
    assert datasets["digits"]["available"] is True
    assert datasets["digits"]["shape"] == [8, 8, 1]
    assert datasets["cifar10"]["classes"] == 10
    mnist_file = settings.resolved_data_dir / "mnist.npz"
    assert datasets["mnist"]["files"] == [str(mnist_file.resolve())]
    assert datasets["mnist"]["available"] is False
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    mnist_file.write_bytes(b"placeholder")
    datasets = {dataset["name"]: dataset for dataset in client.get("/datasets").json()}
    assert datasets["mnist"]["available"] is True


def test_health_and_ready_answer_when_database_and_broker_do(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready == {"status": "ok", "database": "ok", "broker": "ok"} | {
        "workers": 0,
        "note": "no worker has been heard from; start one with make up",
    }


def test_ready_is_503_naming_an_unreachable_broker(settings: Settings) -> None:
    from api.main import create_app

    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken)) as client:
        response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["database"] == "ok"
    assert response.json()["broker"].startswith("unreachable")


def test_openapi_docs_offer_an_example_per_preset(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    operation = client.get("/openapi.json").json()["paths"]["/experiments"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert len(examples) == 15
    assert examples["dropout"]["value"]["preset"] == "dropout"


def test_api_process_never_imports_tensorflow(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from api.main import create_app\n"
        "with TestClient(create_app()) as c:\n"
        "    r = c.post('/experiments', json={'dataset': {'name': 'digits'}})\n"
        "    assert r.status_code == 201\n"
        "    c.get('/presets'); c.get('/datasets'); c.get('/experiments')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'keras'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"CONVLAB_HOME": str(tmp_path), "PATH": ""},
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_a_rerun_with_a_null_dataset_is_a_422_not_a_crash(client: TestClient) -> None:
    parent = client.post("/experiments", json={"dataset": {"name": "digits"}}).json()

    rerun = client.post("/experiments", json={"from": parent["id"], "dataset": None})

    assert rerun.status_code == 422, rerun.text
    assert rerun.json()["detail"][0]["loc"] == ["body", "dataset"]
