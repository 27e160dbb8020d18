"""How a verification rerun compares with the run it verifies: every epoch's metrics, and what
differed between the environments of the attempts that ended them."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from models.epochs import EpochMetrics

COMPARED = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
"""What is compared at each epoch (not ``seconds``, which no two runs share)."""
TOLERANCE = 1e-6
"""The largest difference below which two histories are ``within``."""

Outcome = Literal["identical", "within", "diverged"]


@dataclass(frozen=True)
class Verdict:
    """The comparison, as stored on both runs (``Experiment.verdict``)."""

    original_id: str
    rerun_id: str
    outcome: Outcome
    epochs: int
    """Epochs compared: the longer history's."""
    diverged_at: int | None
    """The first epoch that differs by ``TOLERANCE`` or more, or that one run lacks."""
    largest_difference: float
    """The largest absolute difference of a metric between the two runs at one epoch."""
    largest_at: dict[str, Any] | None
    """Where it is: ``{"epoch": k, "metric": name}`` (None when every value is equal)."""
    summary: str
    environment_differences: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each environment field that differs: ``{"original": value, "rerun": value}``."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def judge(
    ids: tuple[str, str],
    histories: tuple[Sequence[EpochMetrics], Sequence[EpochMetrics]],
    environments: tuple[Mapping[str, Any] | None, Mapping[str, Any] | None],
) -> Verdict:
    """The verdict on a rerun: ``identical`` if every epoch's metrics are equal, ``within`` if
    the largest difference is below ``TOLERANCE``, else ``diverged`` at the first epoch that
    is not (or that only one run has); ``ids``, ``histories`` and ``environments`` are each
    (original, rerun)."""
    original, rerun = ({row.epoch: row for row in history} for history in histories)
    epochs = sorted(original.keys() | rerun.keys())
    largest, largest_at, diverged_at = 0.0, None, None
    for epoch in epochs:
        mine, theirs = original.get(epoch), rerun.get(epoch)
        if mine is None or theirs is None:
            diverged_at = epoch if diverged_at is None else diverged_at
            continue
        for metric in COMPARED:
            difference = _difference(getattr(mine, metric), getattr(theirs, metric))
            if difference >= TOLERANCE and diverged_at is None:
                diverged_at = epoch
            if math.isfinite(difference) and difference > largest:
                largest, largest_at = difference, {"epoch": epoch, "metric": metric}
    outcome: Outcome = (
        "diverged" if diverged_at is not None else "identical" if largest_at is None else "within"
    )
    differences = _environment_differences(*environments)
    summary = _summary(outcome, len(epochs), diverged_at, largest, largest_at, histories)
    if differences:
        summary += f"; the environments differ in {', '.join(differences)}"
    return Verdict(
        original_id=ids[0],
        rerun_id=ids[1],
        outcome=outcome,
        epochs=len(epochs),
        diverged_at=diverged_at,
        largest_difference=largest,
        largest_at=largest_at,
        summary=summary,
        environment_differences=differences,
    )


def _difference(a: float | None, b: float | None) -> float:
    """How far apart two recorded values are: 0 when equal (both missing too), infinite when
    only one was recorded."""
    if a == b:
        return 0.0
    if a is None or b is None:
        return math.inf
    return abs(a - b)


def _environment_differences(
    original: Mapping[str, Any] | None, rerun: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    original, rerun = original or {}, rerun or {}
    return {
        key: {"original": original.get(key), "rerun": rerun.get(key)}
        for key in sorted(original.keys() | rerun.keys())
        if original.get(key) != rerun.get(key)
    }


def _summary(
    outcome: Outcome,
    epochs: int,
    diverged_at: int | None,
    largest: float,
    largest_at: dict[str, Any] | None,
    histories: tuple[Sequence[EpochMetrics], Sequence[EpochMetrics]],
) -> str:
    """The verdict in one sentence."""
    where = (
        "" if largest_at is None else f" ({largest_at['metric']} at epoch {largest_at['epoch']})"
    )
    if outcome == "identical":
        return f"identical: every metric of all {epochs} epochs is equal"
    if outcome == "within":
        return f"within {TOLERANCE:g}: largest difference {largest:.3g}{where}"
    lengths = tuple(len(history) for history in histories)
    if lengths[0] != lengths[1]:
        return (
            f"diverged at epoch {diverged_at}: the original has {lengths[0]} epochs, "
            f"the rerun {lengths[1]}; largest difference {largest:.3g}{where}"
        )
    return f"diverged at epoch {diverged_at}: largest difference {largest:.3g}{where}"
