"""Learning-rate schedules: each epoch's rate as a function of the spec (step, cosine with
warm-up, reduce on plateau), set on the optimizer by the worker and recorded in the history."""

import csv
import io
import math
from collections.abc import Iterator
from typing import Any

import pytest

from models.build import build_model
from models.presets import resolve
from models.spec import ExperimentSpec, PlateauSchedule
from tests.services import Stack, running_stack, wait_for_status
from worker.schedules import ScheduledRate, current_rate, rate_at, reductions

pytestmark = pytest.mark.slow

TERMINAL = {"succeeded", "failed", "cancelled"}
DIGITS = {"dataset": {"name": "digits"}, "training": {"epochs": 4, "batch_size": 64}}


def _spec(training: dict[str, Any], optimizer: dict[str, Any] | None = None) -> ExperimentSpec:
    overrides: dict[str, Any] = {"training": {**DIGITS["training"], **training}}
    return resolve("base", {**DIGITS, **overrides, "optimizer": optimizer or {}})


def test_step_schedule_multiplies_the_rate_every_n_epochs() -> None:
    spec = _spec({"epochs": 7, "lr_schedule": {"type": "step", "every": 3, "factor": 0.1}})
    rates = [rate_at(spec, epoch) for epoch in range(7)]
    assert rates == pytest.approx([1e-3] * 3 + [1e-4] * 3 + [1e-5])


def test_cosine_schedule_warms_up_then_decays_toward_zero() -> None:
    spec = _spec({"epochs": 6, "lr_schedule": {"type": "cosine", "warmup_epochs": 2}})
    rates = [rate_at(spec, epoch) for epoch in range(6)]
    decay = [0.5 * (1 + math.cos(math.pi * step / 4)) for step in range(4)]
    assert rates == pytest.approx([1e-3 / 3, 2e-3 / 3, *(1e-3 * d for d in decay)])
    assert rates[2] == max(rates) and rates[-1] > 0


def test_plateau_cuts_the_rate_after_patience_epochs_without_improvement() -> None:
    schedule = PlateauSchedule(monitor="val_loss", factor=0.5, patience=2)
    assert reductions(schedule, [1.0, 0.9, 0.95, 0.92]) == 1  # two epochs not beating 0.9
    assert reductions(schedule, [1.0, 0.9, 0.95, 0.8, 0.85]) == 0  # the wait starts again
    assert reductions(schedule, [1.0, 1.0, 1.0, 1.0, 1.0]) == 2  # equal is not better
    accuracy = PlateauSchedule(monitor="val_accuracy", factor=0.5, patience=1)
    assert reductions(accuracy, [0.5, 0.6, 0.4, None, 0.7]) == 1  # higher is better
    spec = _spec({"lr_schedule": {"type": "plateau", "patience": 1, "factor": 0.1}})
    assert rate_at(spec, 3, [1.0, 1.0, 1.0, 0.5]) == pytest.approx(1e-5)  # epoch 4's own unused


def test_a_resumed_run_sets_the_rate_its_recorded_epochs_lead_to() -> None:
    spec = _spec({"lr_schedule": {"type": "plateau", "patience": 1, "factor": 0.5}})
    model = build_model(spec)
    past: list[dict[str, float | None]] = [{"val_loss": 1.0}, {"val_loss": 1.2}]
    scheduler = ScheduledRate(spec, past)
    scheduler.set_model(model)
    scheduler.on_epoch_begin(2)
    assert current_rate(model.optimizer) == pytest.approx(5e-4)
    scheduler.on_epoch_end(2, {"val_loss": 1.3})
    scheduler.on_epoch_begin(3)
    assert current_rate(model.optimizer) == pytest.approx(2.5e-4)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"type": "cosine", "warmup_epochs": 4}, "warm up for fewer epochs"),
        ({"type": "step", "every": 0}, "greater than or equal to 1"),
        ({"type": "plateau", "factor": 1.0}, "less than 1"),
        ({"type": "linear"}, "does not match any of the expected tags"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(
    schedule: dict[str, Any], message: str, client: Any
) -> None:
    body = {**DIGITS, "training": {**DIGITS["training"], "lr_schedule": schedule}}
    response = client.post("/experiments", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"][:3] == ["body", "training", "lr_schedule"], detail
    assert message in detail["msg"], detail


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("schedules")) as running:
        yield running


def _train(stack: Stack, training: dict[str, Any], **optimizer: Any) -> list[dict[str, Any]]:
    """Train on digits through the API and a worker; the history's epochs."""
    body = {**DIGITS, "training": {**DIGITS["training"], **training}, "optimizer": optimizer}
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=body).json()["id"]
        experiment = wait_for_status(client, experiment_id, TERMINAL, timeout=180)
        assert experiment["status"] == "succeeded", stack.log_tail()
        epochs: list[dict[str, Any]] = client.get(f"/experiments/{experiment_id}/history").json()[
            "epochs"
        ]
        table = client.get(f"/experiments/{experiment_id}/history", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert [float(row["learning_rate"]) for row in rows] == [e["learning_rate"] for e in epochs]
    return epochs


def test_a_run_without_a_schedule_records_its_constant_rate(stack: Stack) -> None:
    epochs = _train(stack, {"epochs": 2}, name="sgd", learning_rate=0.05)
    assert [epoch["learning_rate"] for epoch in epochs] == [0.05, 0.05]


def test_the_step_schedule_reaches_the_history_epoch_by_epoch(stack: Stack) -> None:
    epochs = _train(stack, {"lr_schedule": {"type": "step", "every": 2, "factor": 0.5}})
    assert [epoch["learning_rate"] for epoch in epochs] == [1e-3, 1e-3, 5e-4, 5e-4]


def test_the_cosine_schedule_reaches_the_history_epoch_by_epoch(stack: Stack) -> None:
    epochs = _train(stack, {"lr_schedule": {"type": "cosine", "warmup_epochs": 1}})
    expected = [5e-4, 1e-3, 1e-3 * 0.5 * (1 + math.cos(math.pi / 3)), 2.5e-4]
    assert [epoch["learning_rate"] for epoch in epochs] == pytest.approx(expected, rel=1e-6)
    assert epochs[-1]["val_accuracy"] > 0.5  # it still learns


def test_the_plateau_schedule_cuts_the_rate_the_history_shows_stalling(stack: Stack) -> None:
    # Plain SGD at a rate too small to move the predictions: val_accuracy stays put, and the
    # rate is cut after each epoch that does not beat it.
    schedule = {"type": "plateau", "monitor": "val_accuracy", "factor": 0.5, "patience": 1}
    epochs = _train(stack, {"lr_schedule": schedule}, name="sgd", learning_rate=1e-7)
    rates = [epoch["learning_rate"] for epoch in epochs]
    spec = _spec({"lr_schedule": schedule}, {"name": "sgd", "learning_rate": 1e-7})
    values = [epoch["val_accuracy"] for epoch in epochs]
    assert rates == pytest.approx([rate_at(spec, n, values) for n in range(4)], rel=1e-6)
    assert values == [values[0]] * 4, values
    assert rates == pytest.approx([1e-7, 1e-7, 5e-8, 2.5e-8], rel=1e-6)
