"""What the event streams read: an experiment's or a study's state and the epochs finished
after the position a client has seen. A position is what SSE calls the last event id: an
epoch number for an experiment; for a study, the ``study_seq`` of the newest epoch row sent
(its study's rows are numbered in the order they commit), a number however many experiments
the study has."""

import re
from dataclasses import dataclass

from jobs.search import trials_to_come
from models.epochs import EpochMetrics
from models.status import ACTIVE, Status
from models.study_state import progress, status_of
from store.db import Engine
from store.experiments import experiment_with_epochs
from store.studies import study_with_epochs
from store.tables import Experiment

MAX_COUNT = 2**31 - 1
"""The largest position a Last-Event-ID may name."""
_DIGITS = re.compile(f"[0-9]{{1,{len(str(MAX_COUNT))}}}")


@dataclass(frozen=True)
class RunState:
    """An experiment's status as a stream reports it."""

    experiment_id: str
    status: Status
    epochs_done: int
    epochs_total: int
    error: str | None

    @classmethod
    def of(cls, experiment: Experiment) -> "RunState":
        return cls(
            experiment.id,
            experiment.status,
            experiment.epochs_done,
            experiment.epochs_total,
            experiment.error,
        )

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE


@dataclass(frozen=True)
class StudyEpoch:
    """One epoch row of a study's experiment, with its place in the study's stream."""

    study_seq: int
    experiment_id: str
    metrics: EpochMetrics


@dataclass(frozen=True)
class StudyState:
    """A study's status, counts, its experiments' states and the epoch rows not yet seen, in
    stream order."""

    status: Status
    progress: dict[str, int]
    runs: list[RunState]
    epochs: list[StudyEpoch]

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE


def experiment_state(
    engine: Engine, experiment_id: str, after_epoch: int
) -> tuple[RunState, list[EpochMetrics]] | None:
    """The experiment's state, then its epochs after ``after_epoch`` (read in that order, so
    a finished state comes with every epoch); None once it is deleted."""
    found = experiment_with_epochs(engine, experiment_id, since=after_epoch)
    if found is None:
        return None
    experiment, epochs = found
    return RunState.of(experiment), epochs


def study_state(engine: Engine, study_id: str, after: int) -> StudyState | None:
    """The study's state, then its epoch rows numbered after ``after`` (read in that order, so
    a finished state comes with every row); None once it is gone."""
    found = study_with_epochs(engine, study_id, after=after)
    if found is None:
        return None
    study, experiments, epochs = found
    return StudyState(
        status=status_of(experiments, trials_to_come(study)),
        progress=progress(experiments),
        runs=[RunState.of(experiment) for experiment in experiments],
        epochs=[StudyEpoch(*row) for row in epochs],
    )


def parse_position(text: str | None) -> int:
    """The position a Last-Event-ID names; anything else counts as nothing seen."""
    return _count(text or "") or 0


def _count(text: str) -> int | None:
    """A count in ASCII digits below 2**31 (an integer column on PostgreSQL), or None; not
    ``str.isdigit``, which accepts ``²`` (that ``int`` refuses)."""
    count = int(text) if _DIGITS.fullmatch(text) else None
    return count if count is not None and count <= MAX_COUNT else None
