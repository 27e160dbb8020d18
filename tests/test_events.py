"""Event streams in process: what a finished experiment or study replays, how Last-Event-ID
resumes, and 404s before a stream starts. The live stream is tested in test_stack.py."""

from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from jobs.events import parse_experiment_position, parse_study_position
from store.tables import Status
from tests.events import parse_events
from tests.services import Trainer

RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 3}}


def _events(
    client: TestClient, url: str, last_event_id: str | bytes | None = None
) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(parse_events(response.iter_lines()))


def _train(trainer: Trainer, experiment_id: str, epochs: int, status: Status) -> None:
    trainer.start(experiment_id)
    for epoch in range(1, epochs + 1):
        trainer.epoch(experiment_id, epoch, 1.0 / epoch, 0.5, 1.2 / epoch, 0.4 + epoch / 100, 0.1)
    trainer.finish(experiment_id, status)


def test_a_finished_experiment_replays_its_epochs_then_its_status_and_ends(
    client: TestClient, trainer: Trainer
) -> None:
    experiment_id = client.post("/experiments", json=RUN).json()["id"]
    _train(trainer, experiment_id, 3, Status.succeeded)
    events = _events(client, f"/experiments/{experiment_id}/events")
    assert [(event["event"], event.get("id")) for event in events] == [
        ("epoch", "1"),
        ("epoch", "2"),
        ("epoch", "3"),
        ("status", None),
    ]
    history = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
    assert [event["data"] for event in events[:3]] == history
    assert events[-1]["data"] == {
        "experiment_id": experiment_id,
        "status": "succeeded",
        "epochs_done": 3,
        "epochs_total": 3,
        "error": None,
    }


def test_last_event_id_resumes_after_that_epoch(client: TestClient, trainer: Trainer) -> None:
    experiment_id = client.post("/experiments", json=RUN).json()["id"]
    _train(trainer, experiment_id, 3, Status.cancelled)
    events = _events(client, f"/experiments/{experiment_id}/events", last_event_id="2")
    assert [event.get("id") for event in events] == ["3", None]
    assert events[-1]["data"]["status"] == "cancelled"


def test_a_study_stream_resumes_without_losing_or_repeating_epochs(
    client: TestClient, trainer: Trainer
) -> None:
    study = client.post("/studies", json={**RUN, "presets": ["base", "dropout"]}).json()
    first, second = study["experiment_ids"]
    _train(trainer, first, 3, Status.succeeded)
    _train(trainer, second, 2, Status.failed)
    events = _events(client, f"/studies/{study['id']}/events")
    epochs = [event for event in events if event["event"] == "epoch"]
    assert sorted((e["data"]["experiment_id"], e["data"]["epoch"]) for e in epochs) == sorted(
        [(first, 1), (first, 2), (first, 3), (second, 1), (second, 2)]
    )
    finished = {
        e["data"]["experiment_id"]: e["data"]["status"]
        for e in events
        if e["event"] == "experiment"
    }
    assert finished == {first: "succeeded", second: "failed"}
    assert events[-1]["event"] == "status"
    assert events[-1]["data"]["status"] == "failed"
    assert events[-1]["data"]["progress"]["epochs_done"] == 5

    for cut in range(len(epochs)):
        resumed = _events(client, f"/studies/{study['id']}/events", epochs[cut]["id"])
        rest = [
            (e["data"]["experiment_id"], e["data"]["epoch"])
            for e in resumed
            if e["event"] == "epoch"
        ]
        assert rest == [(e["data"]["experiment_id"], e["data"]["epoch"]) for e in epochs[cut + 1 :]]


def test_unknown_ids_are_a_404_before_any_stream(client: TestClient) -> None:
    for url in ("/experiments/nope/events", "/studies/nope/events"):
        response = client.get(url)
        assert response.status_code == 404
        assert response.json()["detail"].endswith("nope not found.")


UNWRITTEN = ["\u00b2", "-1", "9" * 20, "9" * 5000, "2147483648", "abc", " 2", "2 ", "0x2"]
"""Last-Event-IDs no stream writes: '²' passes str.isdigit() and int() refuses it; 5000
digits are over int()'s limit; 2**31 is over PostgreSQL's integer."""


@pytest.mark.parametrize("text", UNWRITTEN)
def test_an_unwritten_position_counts_as_nothing_seen(text: str) -> None:
    assert parse_experiment_position(text) == 0
    assert parse_study_position(text) == {}
    assert parse_study_position(f"0123456789ab:3.0123456789ac:{text}") == {}


def test_positions_stream_writes_are_read_back() -> None:
    assert parse_experiment_position("2147483647") == 2**31 - 1
    assert parse_study_position("0123456789ab:3.0123456789ac:2") == {
        "0123456789ab": 3,
        "0123456789ac": 2,
    }


def test_an_unwritten_last_event_id_replays_every_epoch(
    client: TestClient, trainer: Trainer
) -> None:
    experiment_id = client.post("/experiments", json=RUN).json()["id"]
    _train(trainer, experiment_id, 3, Status.succeeded)
    study = client.post("/studies", json={**RUN, "presets": ["base"]}).json()
    trial = study["experiment_ids"][0]
    _train(trainer, trial, 2, Status.succeeded)
    unwritten = [text for text in UNWRITTEN if text == text.strip()]  # HTTP strips the rest
    for text in unwritten:
        events = _events(client, f"/experiments/{experiment_id}/events", text.encode("latin-1"))
        assert [event.get("id") for event in events] == ["1", "2", "3", None]
    for text in [*unwritten, f"{trial[:12]}:1.0123456789ab:-1"]:
        events = _events(client, f"/studies/{study['id']}/events", text.encode("latin-1"))
        assert [event["data"]["epoch"] for event in events if event["event"] == "epoch"] == [1, 2]


@pytest.mark.timeout(30)
def test_streams_read_in_threads_of_their_own(client: TestClient, trainer: Trainer) -> None:
    """With every thread of the sync routes busy (slow routes), a stream still reads."""
    experiment_id = client.post("/experiments", json=RUN).json()["id"]
    _train(trainer, experiment_id, 2, Status.succeeded)
    portal = client.portal
    assert portal is not None
    routes = portal.call(anyio.to_thread.current_default_thread_limiter)
    borrowers = [object() for _ in range(int(routes.total_tokens))]
    for borrower in borrowers:
        portal.call(routes.acquire_on_behalf_of, borrower)
    try:
        events = _events(client, f"/experiments/{experiment_id}/events")
    finally:
        for borrower in borrowers:
            portal.call(routes.release_on_behalf_of, borrower)
    assert [event.get("id") for event in events] == ["1", "2", None]
