"""Event streams in process: what a finished experiment or study replays, how Last-Event-ID
resumes, and 404s before a stream starts. The live stream is tested in test_stack.py."""

import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text as sql

from api.main import create_app
from core.config import Settings
from jobs.events import parse_position, study_state
from models.status import Status
from tests.events import parse_events
from tests.services import Trainer, postgres_database

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
    assert parse_position(text) == 0


def test_positions_stream_writes_are_read_back() -> None:
    assert parse_position("2147483647") == 2**31 - 1
    assert parse_position("7") == 7


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
    for text in [*unwritten, f"{trial[:12]}:1.0123456789ab:1", f"1764470000123456-{trial}-1"]:
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


def _epochs_until(
    client: TestClient, url: str, count: int, last_event_id: str | None = None
) -> list[dict[str, Any]]:
    """The first ``count`` epoch events of a stream that is still going, then a disconnect."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    epochs: list[dict[str, Any]] = []
    with client.stream("GET", url, headers=headers) as response:
        for event in parse_events(response.iter_lines()):
            epochs += [event] if event["event"] == "epoch" else []
            if len(epochs) == count:
                break
    return epochs


def _keys(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [
        (e["data"]["experiment_id"], e["data"]["epoch"]) for e in events if e["event"] == "epoch"
    ]


@pytest.mark.timeout(60)
def test_a_study_stream_resumes_after_epochs_recorded_while_it_was_away(
    client: TestClient, trainer: Trainer
) -> None:
    _resume_after_epochs_recorded_while_away(client, trainer)


@pytest.mark.timeout(120)
def test_a_study_stream_resumes_so_on_postgresql_too(tmp_path: Path) -> None:
    """PostgreSQL's row locks and commit order, in the position's numbering."""
    with postgres_database() as url:
        settings = Settings(home=tmp_path, database_url=url)
        with TestClient(create_app(settings)) as client:
            _resume_after_epochs_recorded_while_away(client, Trainer(settings))


def _resume_after_epochs_recorded_while_away(client: TestClient, trainer: Trainer) -> None:
    study = client.post("/studies", json={**RUN, "presets": ["base", "dropout", "l2"]}).json()
    first, second, third = study["experiment_ids"]
    url = f"/studies/{study['id']}/events"
    for experiment_id in (first, second):
        trainer.start(experiment_id)
    for epoch in (1, 2):
        for experiment_id in (first, second):
            trainer.epoch(experiment_id, epoch, 1.0, 0.5, 1.0, 0.5, 0.1)
    before = _epochs_until(client, url, 3)  # the client goes away in the middle of a poll
    assert len(set(_keys(before))) == 3
    trainer.epoch(second, 3, 1.0, 0.5, 1.0, 0.5, 0.1)
    trainer.start(third)
    trainer.epoch(third, 1, 1.0, 0.5, 1.0, 0.5, 0.1)
    trainer.epoch(first, 3, 1.0, 0.5, 1.0, 0.5, 0.1)
    for experiment_id in (first, second, third):
        trainer.finish(experiment_id, Status.succeeded)
    after = _keys(_events(client, url, before[-1]["id"]))
    every = {(e, n) for e in (first, second) for n in (1, 2, 3)} | {(third, 1)}
    assert len(after) == len(set(after))  # nothing repeated within the resumed stream
    assert sorted(_keys(before) + after) == sorted(every)  # nothing lost, nothing repeated


def test_a_study_streams_ids_stay_short_however_many_experiments(
    client: TestClient, trainer: Trainer
) -> None:
    presets = ["base", "sgd", "momentum", "rmsprop", "adam", "dropout", "l2", "tanh"]
    study = client.post("/studies", json={**RUN, "presets": presets, "seeds": [0, 1, 2]}).json()
    for experiment_id in study["experiment_ids"]:
        _train(trainer, experiment_id, 2, Status.succeeded)
    events = _events(client, f"/studies/{study['id']}/events")
    ids = [event["id"] for event in events if event["event"] == "epoch"]
    assert ids == [str(number) for number in range(1, 2 * 24 + 1)]  # in the order written


@pytest.mark.timeout(60)
def test_an_epoch_row_committing_after_another_comes_after_it_whenever_its_write_began(
    tmp_path: Path,
) -> None:
    """On PostgreSQL, where two workers write at once: while one epoch row's transaction is
    open, another experiment's row of the same study waits for it, so the order of the numbers
    is the order of the commits and a client resuming after the later one has seen both."""
    with postgres_database() as url:
        settings = Settings(home=tmp_path, database_url=url)
        with TestClient(create_app(settings)) as client:
            trainer = Trainer(settings)
            study = client.post("/studies", json={**RUN, "presets": ["base", "l2"]}).json()
            first, second = study["experiment_ids"]
            for experiment_id in (first, second):
                trainer.start(experiment_id)
            with trainer.engine.connect() as slow:  # the first row's write, not committed yet
                slow.execute(
                    sql("UPDATE convlab_studies SET epoch_seq = epoch_seq + 1 WHERE id = :id"),
                    {"id": study["id"]},
                )
                late = threading.Thread(
                    target=trainer.epoch, args=(second, 1, 1.0, 0.5, 1.0, 0.5, 0.1)
                )
                late.start()
                time.sleep(1)
                assert late.is_alive(), "the second write did not wait for the first"
                state = study_state(trainer.engine, study["id"], 0)
                assert state is not None and state.epochs == []  # neither is visible yet
                slow.execute(
                    sql(
                        "INSERT INTO epochs (experiment_id, epoch, loss, accuracy, seconds, "
                        "recorded_at, study_seq) VALUES (:id, 1, 1, 0.5, 0.1, now(), 1)"
                    ),
                    {"id": first},
                )
                slow.commit()
            late.join(timeout=10)
            state = study_state(trainer.engine, study["id"], 0)
            assert state is not None
            assert [(row.study_seq, row.experiment_id) for row in state.epochs] == [
                (1, first),
                (2, second),
            ]
