"""Curves as images, in process: formats, what they show, and that they change exactly when
the history does."""

from fastapi.testclient import TestClient

from models.status import Status
from tests.pictures import PNG_SIGNATURE
from tests.services import Trainer

RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 4}}


def _epoch(trainer: Trainer, experiment_id: str, epoch: int) -> None:
    trainer.epoch(experiment_id, epoch, 1.0 / epoch, 0.5 + epoch / 10, 1.1 / epoch, 0.4, 0.1)


def test_an_experiment_plot_is_a_png_or_svg_of_both_panels(
    client: TestClient, trainer: Trainer
) -> None:
    experiment_id = client.post("/experiments", json={**RUN, "name": "two panels"}).json()["id"]
    trainer.start(experiment_id)
    _epoch(trainer, experiment_id, 1)
    png = client.get(f"/experiments/{experiment_id}/plot.png")
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(PNG_SIGNATURE)
    svg = client.get(f"/experiments/{experiment_id}/plot.svg")
    assert svg.headers["content-type"] == "image/svg+xml"
    for text in ("two panels: running, 1/4 epochs", "Accuracy", "Loss", "train", "test"):
        assert f">{text}<" in svg.text, text
    assert client.get(f"/experiments/{experiment_id}/plot.gif").status_code == 422
    assert client.get("/experiments/nope/plot.png").status_code == 404


def test_a_run_without_epochs_says_so_instead_of_drawing_empty_axes(client: TestClient) -> None:
    experiment_id = client.post("/experiments", json=RUN).json()["id"]
    svg = client.get(f"/experiments/{experiment_id}/plot.svg").text
    assert svg.count(">No finished epoch<") == 2
    assert ">train<" not in svg


def test_a_plot_is_rendered_again_only_when_the_history_changes(
    client: TestClient, trainer: Trainer
) -> None:
    experiment_id = client.post("/experiments", json=RUN).json()["id"]
    trainer.start(experiment_id)
    _epoch(trainer, experiment_id, 1)
    url = f"/experiments/{experiment_id}/plot.svg"
    first = client.get(url)
    unchanged = client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    _epoch(trainer, experiment_id, 2)
    second = client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200
    assert second.headers["etag"] != first.headers["etag"]
    assert "2/4 epochs" in second.text
    trainer.finish(experiment_id, Status.cancelled)
    assert "cancelled, 2/4 epochs" in client.get(url).text


def test_a_study_plot_overlays_every_variant(client: TestClient, trainer: Trainer) -> None:
    body = {**RUN, "name": "dropout or not", "presets": ["base", "dropout"], "seeds": [0, 1]}
    study = client.post("/studies", json=body).json()
    empty = client.get(f"/studies/{study['id']}/plot.svg")
    assert empty.status_code == 200  # nothing trained yet: empty panels, not an error
    for experiment_id in study["experiment_ids"]:
        trainer.start(experiment_id)
        _epoch(trainer, experiment_id, 1)
    svg = client.get(f"/studies/{study['id']}/plot.svg").text
    for text in ("dropout or not: test curves, mean over seeds", ">base<", ">dropout<"):
        assert text in svg, text
    png = client.get(f"/studies/{study['id']}/plot.png")
    assert png.content.startswith(PNG_SIGNATURE)
    assert client.get("/studies/nope/plot.png").status_code == 404
