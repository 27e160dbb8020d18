"""Reruns that prove a run: ``POST /experiments/{id}/verify`` against a running stack with a real
worker (PostgreSQL, Redis): deterministic digits runs repeat bit for bit and are judged
``identical``, any other gets a verdict, each attempt records what it ran with, and a run that
has not succeeded is refused. The verdict itself is checked on plain data, and the store's
side of judging on both databases."""

import platform
import subprocess
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import Engine

from core.config import Settings
from jobs.sweeper import sweep
from jobs.verdict import TOLERANCE, judge
from jobs.verify import settle_all
from models.epochs import EpochMetrics
from models.status import Status
from store.db import session_scope
from store.experiments import create_experiment
from store.runs import record_epoch
from store.tables import Experiment
from store.transitions import claim, finish
from store.verdicts import mark_verification, unjudged
from tests.browser import chromium, text
from tests.services import (
    ROOT,
    Stack,
    Trainer,
    server_stack,
    wait_for,
    wait_for_status,
)

DIGITS = {"preset": "base", "dataset": {"name": "digits"}, "training": {"epochs": 3}}
DETERMINISTIC = {**DIGITS, "training": {"epochs": 3, "deterministic": True}}
COMPARED = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
ENDED = {"succeeded", "failed", "cancelled"}
ENVIRONMENT = {"python": "3.11.7", "tensorflow": "2.21.0", "gpu": "cpu", "commit": "abc"}


def _epoch(epoch: int, loss: float, val_loss: float | None = 0.5) -> EpochMetrics:
    return EpochMetrics(epoch, loss, 0.5, val_loss, 0.8, seconds=float(epoch), learning_rate=1e-3)


HISTORY = [_epoch(1, 1.0), _epoch(2, 0.5), _epoch(3, 0.25)]


# ---- the verdict, on plain data ----------------------------------------------------------


def test_judge_equal_histories_are_identical() -> None:
    slower = [EpochMetrics(**{**vars(row), "seconds": 9.0}) for row in HISTORY]
    verdict = judge(("a", "b"), (HISTORY, slower), (ENVIRONMENT, ENVIRONMENT))
    assert verdict.outcome == "identical"
    assert (verdict.diverged_at, verdict.largest_difference, verdict.largest_at) == (None, 0, None)
    assert verdict.epochs == 3
    assert verdict.environment_differences == {}
    assert verdict.summary == "identical: every metric of all 3 epochs is equal"


def test_judge_differences_below_the_tolerance_are_within() -> None:
    rerun = [HISTORY[0], _epoch(2, 0.5 + 4e-7), _epoch(3, 0.25, val_loss=0.5 - 9e-7)]
    verdict = judge(("a", "b"), (HISTORY, rerun), (ENVIRONMENT, ENVIRONMENT))
    assert verdict.outcome == "within"
    assert verdict.diverged_at is None
    assert verdict.largest_difference == pytest.approx(9e-7)
    assert verdict.largest_at == {"epoch": 3, "metric": "val_loss"}


def test_judge_names_the_first_epoch_that_diverges_and_the_largest_difference() -> None:
    rerun = [HISTORY[0], _epoch(2, 0.5 + 2 * TOLERANCE), _epoch(3, 0.35)]
    verdict = judge(("a", "b"), (HISTORY, rerun), (ENVIRONMENT, ENVIRONMENT))
    assert verdict.outcome == "diverged"
    assert verdict.diverged_at == 2
    assert verdict.largest_difference == pytest.approx(0.1)
    assert verdict.largest_at == {"epoch": 3, "metric": "loss"}
    assert verdict.summary == "diverged at epoch 2: largest difference 0.1 (loss at epoch 3)"


def test_judge_a_difference_of_exactly_the_tolerance_diverges() -> None:
    exact = judge(("a", "b"), ([_epoch(1, 0.0)], [_epoch(1, TOLERANCE)]), (None, None))
    assert (exact.outcome, exact.diverged_at, exact.largest_difference) == ("diverged", 1, 1e-6)


def test_judge_a_run_with_an_epoch_the_other_lacks_diverges_there() -> None:
    verdict = judge(("a", "b"), (HISTORY, HISTORY[:2]), (ENVIRONMENT, ENVIRONMENT))
    assert (verdict.outcome, verdict.diverged_at, verdict.epochs) == ("diverged", 3, 3)
    assert "the original has 3 epochs, the rerun 2" in verdict.summary


def test_judge_a_metric_only_one_run_recorded_diverges_there() -> None:
    rerun = [HISTORY[0], _epoch(2, 0.5, val_loss=None), HISTORY[2]]
    verdict = judge(("a", "b"), (HISTORY, rerun), (ENVIRONMENT, ENVIRONMENT))
    assert (verdict.outcome, verdict.diverged_at) == ("diverged", 2)


def test_judge_lists_the_environment_fields_that_differ() -> None:
    elsewhere = {**ENVIRONMENT, "tensorflow": "2.20.0", "gpu": "NVIDIA H100", "driver": "550.1"}
    verdict = judge(("a", "b"), (HISTORY, HISTORY), (ENVIRONMENT, elsewhere))
    assert verdict.outcome == "identical"
    assert verdict.environment_differences == {
        "driver": {"original": None, "rerun": "550.1"},
        "gpu": {"original": "cpu", "rerun": "NVIDIA H100"},
        "tensorflow": {"original": "2.21.0", "rerun": "2.20.0"},
    }
    assert verdict.summary.endswith("; the environments differ in driver, gpu, tensorflow")
    unrecorded = judge(("a", "b"), (HISTORY, HISTORY), (None, {"gpu": "cpu"}))
    assert unrecorded.environment_differences == {"gpu": {"original": None, "rerun": "cpu"}}


# ---- judging in the store, on SQLite and PostgreSQL ---------------------------------------


def _trained(engine: Engine, history: list[EpochMetrics], environment: dict[str, Any]) -> str:
    """A succeeded run of ``history``, its one attempt recorded with ``environment``."""
    with session_scope(engine) as session:
        run_id = create_experiment(session, name=None, spec={**DIGITS, "seed": 0}).id
    assert claim(engine, run_id, "test", lease_seconds=60, max_lost=3, environment=environment)
    for row in history:
        record_epoch(engine, run_id, "test", row, checkpoint=None, lease_seconds=60)
    finish(engine, run_id, "test", Status.succeeded)
    return run_id


def test_settle_all_judges_a_succeeded_rerun_once_on_both_runs(engine: Engine) -> None:
    original = _trained(engine, HISTORY, ENVIRONMENT)
    rerun = _trained(engine, HISTORY[:2], {**ENVIRONMENT, "tensorflow": "2.20.0"})
    assert unjudged(engine) == []  # not a verification yet
    with session_scope(engine) as session:
        mark_verification(session, rerun, original)
    assert unjudged(engine) == [rerun]
    settle_all(engine)
    assert unjudged(engine) == []
    with session_scope(engine) as session:
        verdicts = [session.get(Experiment, key).verdict for key in (original, rerun)]  # type: ignore[union-attr]
    assert verdicts[0] == verdicts[1]
    assert verdicts[0] is not None
    assert verdicts[0]["original_id"] == original
    assert verdicts[0]["rerun_id"] == rerun
    assert (verdicts[0]["outcome"], verdicts[0]["diverged_at"]) == ("diverged", 3)
    assert verdicts[0]["environment_differences"] == {
        "tensorflow": {"original": "2.21.0", "rerun": "2.20.0"}
    }


def _train(trainer: Trainer, experiment_id: str, history: list[EpochMetrics]) -> None:
    trainer.start(experiment_id)
    for row in history:
        trainer.epoch(experiment_id, *vars(row).values())
    trainer.finish(experiment_id, Status.succeeded)


def test_sweep_judges_a_verification_that_no_worker_judged(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    original = client.post("/experiments", json=DIGITS).json()["id"]
    _train(trainer, original, HISTORY)
    rerun = client.post(f"/experiments/{original}/verify").json()["id"]
    _train(trainer, rerun, HISTORY)
    sweep(trainer.engine, client.app.state.celery, settings)  # type: ignore[attr-defined]
    verdicts = [client.get(f"/experiments/{key}").json()["verdict"] for key in (original, rerun)]
    assert verdicts[0] == verdicts[1]
    assert verdicts[0]["outcome"] == "identical"


# ---- against a running stack ---------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Its sweeper runs once an hour: every verdict here is the worker's, as the run ends."""
    home = tmp_path_factory.mktemp("verify")
    with server_stack(home, workers=1, sweep_interval_s="3600") as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


def _run(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """Submit ``body`` and wait for it to end."""
    created = api.post("/experiments", json=body)
    assert created.status_code == 201, created.text
    return wait_for_status(api, created.json()["id"], ENDED, timeout=240)


def _verdict(api: httpx.Client, experiment_id: str) -> dict[str, Any]:
    def recorded() -> dict[str, Any] | None:
        found: dict[str, Any] | None = api.get(f"/experiments/{experiment_id}").json()["verdict"]
        return found

    return wait_for(recorded, timeout=60, what=f"the verdict on {experiment_id}")  # type: ignore[no-any-return]


def _metrics(api: httpx.Client, experiment_id: str) -> list[dict[str, Any]]:
    epochs = api.get(f"/experiments/{experiment_id}/history").json()["epochs"]
    return [{key: epoch[key] for key in ("epoch", *COMPARED)} for epoch in epochs]


@pytest.fixture(scope="module")
def deterministic(api: httpx.Client) -> dict[str, Any]:
    """A succeeded deterministic digits run."""
    ended = _run(api, DETERMINISTIC)
    assert ended["status"] == "succeeded", ended["error"]
    return ended


@pytest.mark.slow
def test_verify_deterministic_runs_are_identical_bit_for_bit(
    stack: Stack, api: httpx.Client, deterministic: dict[str, Any]
) -> None:
    assert deterministic["spec"]["training"]["deterministic"] is True
    verified = stack.convlab("verify", deterministic["id"], "--wait")
    assert verified.returncode == 0, verified.stderr
    rerun_id = verified.stdout.split()[0]
    rerun = api.get(f"/experiments/{rerun_id}").json()
    assert rerun["status"] == "succeeded"
    assert (rerun["verifies_id"], rerun["parent_id"]) == (deterministic["id"],) * 2
    assert rerun["spec"] == deterministic["spec"]
    assert _metrics(api, rerun_id) == _metrics(api, deterministic["id"])
    verdict = rerun["verdict"]
    assert verdict["outcome"] == "identical", verdict
    assert (verdict["original_id"], verdict["rerun_id"]) == (deterministic["id"], rerun_id)
    assert verdict["environment_differences"] == {}
    assert api.get(f"/experiments/{deterministic['id']}").json()["verdict"] == verdict
    assert "identical: every metric of all 3 epochs is equal" in verified.stdout
    assert f"{rerun_id} reran {deterministic['id']}" in verified.stdout


@pytest.mark.slow
def test_verify_records_a_verdict_on_a_run_without_determinism(api: httpx.Client) -> None:
    original = _run(api, DIGITS)
    assert original["spec"]["training"]["deterministic"] is False
    answer = api.post(f"/experiments/{original['id']}/verify")
    assert answer.status_code == 201, answer.text
    rerun = answer.json()
    assert answer.headers["location"] == f"/experiments/{rerun['id']}"
    assert (rerun["status"], rerun["verifies_id"], rerun["verdict"]) == (
        "queued",
        original["id"],
        None,
    )
    assert wait_for_status(api, rerun["id"], ENDED, timeout=240)["status"] == "succeeded"
    verdict = _verdict(api, rerun["id"])
    assert verdict["outcome"] in {"identical", "within", "diverged"}
    assert _verdict(api, original["id"]) == verdict


@pytest.mark.slow
def test_attempt_log_and_show_give_the_workers_real_environment(
    stack: Stack, api: httpx.Client, deterministic: dict[str, Any]
) -> None:
    import keras
    import tensorflow as tf

    from worker.heartbeat import accelerator

    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    build = tf.sysconfig.get_build_info()
    gpu = accelerator().name
    (attempt,) = api.get(f"/experiments/{deterministic['id']}").json()["attempt_log"]
    assert attempt["environment"] == {
        "python": platform.python_version(),
        "backend": "tensorflow",
        "tensorflow": tf.__version__,
        "jax": None,
        "torch": None,
        "keras": keras.__version__,
        "cuda": build.get("cuda_version"),
        "cudnn": build.get("cudnn_version"),
        "gpu": gpu,
        "driver": attempt["environment"]["driver"] if gpu != "cpu" else None,
        "convlab": metadata.version("convlab"),
        "commit": head.stdout.strip() if head.returncode == 0 else None,
    }
    shown = stack.convlab("show", deterministic["id"])
    assert shown.returncode == 0, shown.stderr
    (line,) = [line for line in shown.stdout.splitlines() if line.startswith("attempt 1 ran")]
    assert f"Python {platform.python_version()}, TensorFlow {tf.__version__}, " in line
    assert f"Keras {keras.__version__}, " in line


def _failed(stack: Stack) -> str:
    """A run that failed after an epoch, written as a worker would (stored without a message,
    so that the stack's worker does not train it first)."""
    trainer = Trainer(Settings(database_url=stack.env["CONVLAB_DATABASE_URL"]))
    with session_scope(trainer.engine) as session:
        run_id = create_experiment(session, name=None, spec={**DIGITS, "seed": 0}).id
    trainer.start(run_id)
    trainer.epoch(run_id, 1, 2.3, 0.1, 2.3, 0.1, 1.0)
    trainer.finish(run_id, Status.failed)
    return run_id


@pytest.mark.slow
def test_verify_refuses_a_run_that_has_not_succeeded(
    stack: Stack, api: httpx.Client, deterministic: dict[str, Any]
) -> None:
    busy = api.post("/experiments", json={**DIGITS, "training": {"epochs": 500}}).json()
    waiting = api.post("/experiments", json=DIGITS).json()
    wait_for_status(api, busy["id"], {"running"})
    for run, status in ((busy, "running"), (waiting, "queued")):
        refused = api.post(f"/experiments/{run['id']}/verify")
        assert refused.status_code == 409
        assert refused.json()["detail"] == (
            f"Experiment {run['id']} is {status}; only a succeeded experiment can be verified: "
            "its rerun is compared with its history epoch by epoch."
        )
    for run in (waiting, busy):
        api.post(f"/experiments/{run['id']}/cancel")
    failed = _failed(stack)
    refused = api.post(f"/experiments/{failed}/verify")
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(f"Experiment {failed} is failed; only a succeeded ")
    assert api.post("/experiments/nope/verify").status_code == 404
    continued = api.post(f"/experiments/{deterministic['id']}/continue", json={"epochs": 1})
    child = wait_for_status(api, continued.json()["id"], ENDED)
    assert child["status"] == "succeeded", child["error"]
    refused = api.post(f"/experiments/{child['id']}/verify")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"Experiment {child['id']} continues {deterministic['id']} after epoch 3, so a rerun "
        "from scratch cannot repeat it; verify the experiment it continues instead."
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """tests/test_dashboard.py drives the rest of the dashboard."""
    with chromium() as browser:
        yield browser


@pytest.mark.slow
def test_the_run_page_verifies_then_shows_the_verdict_and_each_attempts_environment(
    stack: Stack, api: httpx.Client, browser: WebDriver, deterministic: dict[str, Any]
) -> None:
    original = deterministic["id"]
    browser.get(f"{stack.url}/#/experiments/{original}")
    text(browser, "#verify")
    browser.find_element(By.ID, "verify").click()
    text(browser, "#verifies")
    rerun = browser.current_url.rsplit("/", 1)[1]
    assert rerun != original
    shown = text(browser, "#verdict")  # recorded after the rerun's page saw it end
    served = api.get(f"/experiments/{rerun}").json()
    assert served["verifies_id"] == original
    assert shown == served["verdict"]["summary"]
    environment = served["attempt_log"][0]["environment"]
    row = text(browser, "#attempts tr[data-attempt='1']")
    assert f"Python {environment['python']}, TensorFlow {environment['tensorflow']}, " in row
    assert f"convlab {environment['convlab']}" in row
    browser.get(f"{stack.url}/#/experiments/{original}")
    assert text(browser, "#verdict") == served["verdict"]["summary"]
