"""A study's runs read as one: its status, its counts, its variants in order, and whether a
search's pruner stopped a trial. Pure functions of the runs' fields, no database."""

from collections import Counter
from typing import Protocol, TypeVar

from models.status import Status

PRUNED = "pruned at epoch"
"""How a pruned trial's error begins (then the epoch it stopped after)."""


class Run(Protocol):
    """The fields of a study's experiment these functions read."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> Status: ...
    @property
    def error(self) -> str | None: ...
    @property
    def variant(self) -> str | None: ...
    @property
    def epochs_done(self) -> int: ...
    @property
    def epochs_total(self) -> int: ...


R = TypeVar("R", bound=Run)
T = TypeVar("T")


def pruned(experiment: Run) -> bool:
    """Whether a search's pruner stopped the trial: cancelled, but as the trial's outcome."""
    return experiment.status == Status.cancelled and (experiment.error or "").startswith(PRUNED)


def status_of(members: list[R], more_to_come: bool = False) -> Status:
    """Running while any experiment may still change or more are to come (a search's next
    trials); paused while some wait to be resumed; then failed, cancelled or succeeded (a
    pruned trial counts as succeeded: it ran until its pruner judged it)."""
    statuses = {Status.succeeded if pruned(e) else e.status for e in members}
    if Status.running in statuses or (Status.queued in statuses and len(statuses) > 1):
        return Status.running
    if more_to_come and Status.queued not in statuses:
        return Status.running
    for status in (Status.queued, Status.paused, Status.failed, Status.cancelled):
        if status in statuses:
            return status
    return Status.succeeded


def progress(members: list[R]) -> dict[str, int]:
    """How many experiments are in each status, and epochs done out of planned."""
    counts = Counter(str(experiment.status) for experiment in members)
    return {
        **{str(status): counts.get(str(status), 0) for status in Status},
        "epochs_done": sum(experiment.epochs_done for experiment in members),
        "epochs_total": sum(experiment.epochs_total for experiment in members),
    }


def variants(members: list[R]) -> list[str]:
    """The study's variants (or a search's trials) in the order they were created."""
    return list(dict.fromkeys(experiment.variant or experiment.id for experiment in members))


def by_variant(members: list[R]) -> list[tuple[str, list[R]]]:
    """The experiments grouped by variant (one per seed), in the order the study made them."""
    return [
        (variant, [e for e in members if (e.variant or e.id) == variant])
        for variant in variants(members)
    ]


def first_within(sized: list[tuple[T, int]], budget: int) -> list[T]:
    """The first items whose sizes add up to at most ``budget`` (the first one always)."""
    kept: list[T] = []
    total = 0
    for item, size in sized:
        total += size
        if kept and total > budget:
            break
        kept.append(item)
    return kept
