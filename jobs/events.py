"""What the event streams read: an experiment's or a study's state and the epochs finished
after the position a client has seen. A position is what SSE calls the last event id: an
epoch number for an experiment, ``<id prefix>:<epochs seen>`` pairs for a study."""

import re
from dataclasses import dataclass

from sqlalchemy import Engine, and_, or_
from sqlmodel import col, select

from jobs.search import trials_to_come
from store.db import session_scope
from store.experiments import METRIC_COLUMNS, history
from store.studies import progress, status_of, study_experiments
from store.tables import ACTIVE, EpochMetrics, EpochRecord, Experiment, Status, Study

ID_PREFIX = 12
"""Hex characters of an experiment id that name it in a study position (ids are uuid4 hex)."""
MAX_COUNT = 2**31 - 1
"""The largest epoch number a position may hold."""
_DIGITS = re.compile(f"[0-9]{{1,{len(str(MAX_COUNT))}}}")
_PREFIX = re.compile(f"[0-9a-f]{{{ID_PREFIX}}}")


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
class StudyState:
    """A study's status, counts, its experiments' states and the epochs not yet seen."""

    status: Status
    progress: dict[str, int]
    runs: list[RunState]
    epochs: list[tuple[str, EpochMetrics]]

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE


def experiment_state(
    engine: Engine, experiment_id: str, after_epoch: int
) -> tuple[RunState, list[EpochMetrics]] | None:
    """The experiment's state, then its epochs after ``after_epoch`` (read in that order, so
    a finished state comes with every epoch); None once it is deleted."""
    with session_scope(engine) as session:
        experiment = session.get(Experiment, experiment_id)
        if experiment is None:
            return None
        return RunState.of(experiment), history(session, experiment_id, since=after_epoch)


def study_state(engine: Engine, study_id: str, seen: dict[str, int]) -> StudyState | None:
    """The study's state and, per experiment, the epochs after those in ``seen`` (keyed by
    id prefix); None once it is gone."""
    with session_scope(engine) as session:
        study = session.get(Study, study_id)
        if study is None:
            return None
        experiments = study_experiments(session, study_id)
        behind = {
            experiment.id: after
            for experiment in experiments
            if experiment.epochs_done > (after := seen.get(experiment.id[:ID_PREFIX], 0))
        }
        epochs: list[tuple[str, EpochMetrics]] = []
        if behind:
            newer = (
                and_(col(EpochRecord.experiment_id) == key, col(EpochRecord.epoch) > after)
                for key, after in behind.items()
            )
            rows = session.exec(
                select(EpochRecord.experiment_id, *METRIC_COLUMNS)
                .where(or_(*newer))
                .order_by(col(EpochRecord.recorded_at), col(EpochRecord.epoch))
            )
            epochs = [(experiment_id, EpochMetrics(*metrics)) for experiment_id, *metrics in rows]
        return StudyState(
            status=status_of(experiments, trials_to_come(study)),
            progress=progress(experiments),
            runs=[RunState.of(experiment) for experiment in experiments],
            epochs=epochs,
        )


def study_position(seen: dict[str, int]) -> str:
    """The last event id that stands for ``seen``."""
    return ".".join(f"{prefix}:{count}" for prefix, count in seen.items() if count)


def parse_experiment_position(text: str | None) -> int:
    """The epoch a Last-Event-ID names; anything else counts as nothing seen."""
    return _count(text or "") or 0


def parse_study_position(text: str | None) -> dict[str, int]:
    """``seen`` from a Last-Event-ID; one that ``study_position`` cannot have written counts
    as nothing seen."""
    seen: dict[str, int] = {}
    for pair in text.split(".") if text else ():
        prefix, _, written = pair.partition(":")
        count = _count(written)
        if count is None or not _PREFIX.fullmatch(prefix):
            return {}
        seen[prefix] = count
    return seen


def _count(text: str) -> int | None:
    """A count in ASCII digits below 2**31 (an integer column on PostgreSQL), or None; not
    ``str.isdigit``, which accepts ``²`` (that ``int`` refuses)."""
    count = int(text) if _DIGITS.fullmatch(text) else None
    return count if count is not None and count <= MAX_COUNT else None
