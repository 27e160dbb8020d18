"""Preemption: a high run that waited past CONVLAB_PREEMPT_AFTER_S with no free worker has the
lowest-priority running run asked to yield; that run checkpoints at its next batch, goes back
queued with ``preemptions`` counted and resumes from its checkpoint, its epochs kept; each
wait asks once, and a run preempted CONVLAB_MAX_PREEMPTIONS times is not asked again."""

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from core.config import Settings
from jobs.preemption import Yield, preempt
from models.accelerator import CPU, Accelerator
from models.status import Priority, Status
from store.db import session_scope
from store.experiments import create_experiment
from store.runs import requested_stop
from store.tables import Experiment, utcnow
from store.transitions import claim, claim_next, pause, release, resume
from store.workers import beat
from tests.services import Stack, running_stack, wait_for, wait_for_status

SPEC = {"preset": "base", "dataset": {"name": "digits"}, "training": {"epochs": 2}}


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(home=tmp_path, preempt_after_s=0, **values)


def _queued(engine: Engine, priority: Priority, *, spec: dict[str, Any] = SPEC) -> str:
    """A queued run of ``priority``, submitted a minute ago."""
    with session_scope(engine) as session:
        experiment = create_experiment(session, name=None, spec=spec, priority=priority)
        experiment.created_at = utcnow() - timedelta(minutes=1)
        return experiment.id


def _running(engine: Engine, priority: Priority, worker: str, on: Accelerator = CPU) -> str:
    """A run of ``priority`` that the process ``worker`` (beating, on ``on``) holds."""
    experiment_id = _queued(engine, priority)
    beat(engine, worker, host=worker.split("/")[0], pid=1, accelerator=on)
    assert claim(engine, experiment_id, worker, lease_seconds=60, max_lost=3) is not None
    return experiment_id


def test_the_lowest_priority_most_recent_run_is_asked_once(engine: Engine, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    normal = _running(engine, Priority.normal, "a/1/1")
    older_low = _running(engine, Priority.low, "b/1/1")
    newer_low = _running(engine, Priority.low, "c/1/1")
    urgent = _queued(engine, Priority.high)

    assert preempt(engine, settings) == [Yield(newer_low, urgent)]
    assert requested_stop(engine, newer_low) == Status.queued  # the worker's poll: yield
    assert requested_stop(engine, older_low) is None and requested_stop(engine, normal) is None
    assert preempt(engine, settings) == []  # one yield per waiting run, however long it waits


def test_no_run_is_asked_while_a_worker_the_waiting_run_fits_is_free(
    engine: Engine, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    low = _running(engine, Priority.low, "a/1/1")
    beat(engine, "idle/1/1", host="idle", pid=1, accelerator=CPU)
    _queued(engine, Priority.high)
    assert preempt(engine, settings) == []
    _queued(engine, Priority.high, spec={**SPEC, "resources": {"accelerator": "gpu"}})
    assert preempt(engine, settings) == []  # a GPU run: no worker it fits runs low work
    assert requested_stop(engine, low) is None


def test_normal_runs_preempt_low_ones_only_when_allowed(engine: Engine, tmp_path: Path) -> None:
    low = _running(engine, Priority.low, "a/1/1")
    waiting = _queued(engine, Priority.normal)
    assert preempt(engine, _settings(tmp_path)) == []
    assert preempt(engine, _settings(tmp_path, preempt_low=True)) == [Yield(low, waiting)]


def test_a_run_preempted_max_times_is_not_asked_again(engine: Engine, tmp_path: Path) -> None:
    settings = _settings(tmp_path, max_preemptions=3)
    low = _running(engine, Priority.low, "a/1/1")
    for round_ in range(1, 5):
        urgent = _queued(engine, Priority.high)
        asked = preempt(engine, settings)
        if round_ > 3:
            assert asked == []  # preempted three times: left alone
            break
        assert asked == [Yield(low, urgent)]
        release(engine, low, "a/1/1", checkpoint=None)  # the worker yields at its next batch
        with session_scope(engine) as session:
            row = session.get(Experiment, low)
            assert row is not None
            assert (row.status, row.preemptions, row.yield_requested) == ("queued", round_, False)
            session.exec(  # the urgent run got the worker and finished
                update(Experiment).where(col(Experiment.id) == urgent).values(status="succeeded")
            )
        assert claim_next(engine, low, "a/1/1", lease_seconds=60, max_lost=3) is not None


def test_a_run_back_in_the_queue_waits_again_and_may_ask_again(
    engine: Engine, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, preempt_after_s=30, preempt_low=True)
    low = _running(engine, Priority.low, "a/1/1")
    waiting = _queued(engine, Priority.normal)  # submitted a minute ago
    assert preempt(engine, settings) == [Yield(low, waiting)]
    _paused_or_resumed(engine, waiting, pause)  # its user pauses it before the worker frees
    release(engine, low, "a/1/1", checkpoint=None)
    assert claim_next(engine, low, "a/1/1", lease_seconds=60, max_lost=3) is not None
    _paused_or_resumed(engine, waiting, resume)
    assert preempt(engine, settings) == []  # back in line just now: its wait starts again
    with session_scope(engine) as session:
        session.exec(
            update(Experiment)
            .where(col(Experiment.id) == waiting)
            .values(queued_at=utcnow() - timedelta(seconds=31))
        )
    assert preempt(engine, settings) == [Yield(low, waiting)]  # one request per wait


def _paused_or_resumed(
    engine: Engine, experiment_id: str, change: Callable[[Session, Experiment], Experiment]
) -> None:
    with session_scope(engine) as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        change(session, experiment)


# Black-box: a real worker, digits, a high run submitted while a long low run trains.

LOW = {"dataset": {"name": "digits"}, "training": {"epochs": 12, "batch_size": 16}}
HIGH = {"dataset": {"name": "digits"}, "training": {"epochs": 2}, "priority": "high"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = {"preempt_after_s": "1", "sweep_interval_s": "1", "checkpoint_seconds": "0"}
    with running_stack(tmp_path_factory.mktemp("preemption"), **settings) as running:
        yield running


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _get(client: httpx.Client, experiment_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/experiments/{experiment_id}").json()
    return body


def _epochs(client: httpx.Client, experiment_id: str) -> list[dict[str, Any]]:
    epochs: list[dict[str, Any]] = client.get(f"/experiments/{experiment_id}/history").json()[
        "epochs"
    ]
    return epochs


@pytest.mark.slow
def test_a_high_run_preempts_a_running_low_one_which_resumes_losing_no_epoch(
    stack: Stack,
) -> None:
    with stack.client() as client:
        low = client.post("/experiments", json={**LOW, "priority": "low"}).json()["id"]
        wait_for(
            lambda: _get(client, low)["epochs_done"] >= 1, timeout=180, what="the low run to train"
        )
        high = client.post("/experiments", json=HIGH).json()["id"]

        def yielded() -> dict[str, Any] | None:
            body = _get(client, low)
            return body if body["status"] == "queued" and body["preemptions"] == 1 else None

        at_yield = wait_for(yielded, timeout=120, what="the low run to yield")
        kept = _epochs(client, low)  # what it had recorded when it went back to the queue
        assert [row["epoch"] for row in kept] == list(range(1, at_yield["epochs_done"] + 1))
        assert at_yield["epochs_done"] < LOW["training"]["epochs"]

        done_high = wait_for_status(client, high, {"succeeded"}, timeout=180)
        done_low = wait_for_status(client, low, {"succeeded"}, timeout=300)

    first, second = (_at(attempt["started_at"]) for attempt in done_low["attempt_log"])
    high_times = [_at(done_high[key]) for key in ("created_at", "started_at", "finished_at")]
    assert first < high_times[0] < high_times[1]  # low ran, high came, and started
    assert high_times[2] <= second  # the freed worker went to high; low resumed after it
    assert (done_low["preemptions"], done_high["preemptions"]) == (1, 0)
    epochs = _epochs(stack.client(), low)
    assert [row["epoch"] for row in epochs] == list(range(1, LOW["training"]["epochs"] + 1))
    assert epochs[: len(kept)] == kept  # the epochs before the yield were not trained again
    assert f"experiment {low} resumes after epoch {at_yield['epochs_done']}" in stack.log_text()
