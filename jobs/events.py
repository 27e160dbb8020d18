"""What the event streams read: an experiment's or a study's state and the epochs finished
after the position a client has seen. A position is what SSE calls the last event id: an
epoch number for an experiment; for a study, the newest epoch it sent, in the order a study
stream sends them (``StudyPosition``): a bounded id, however many experiments the study has."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, func, or_
from sqlmodel import col, select

from jobs.search import trials_to_come
from store.db import session_scope
from store.experiments import METRIC_COLUMNS, history
from store.studies import progress, status_of, study_experiments
from store.tables import ACTIVE, EpochMetrics, EpochRecord, Experiment, Status, Study

MAX_COUNT = 2**31 - 1
"""The largest epoch number a position may hold."""
_DIGITS = re.compile(f"[0-9]{{1,{len(str(MAX_COUNT))}}}")
_STUDY_POSITION = re.compile(r"([0-9]{1,16})-([0-9a-f]{32})-([0-9]{1,10})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, order=True)
class StudyPosition:
    """An epoch row's place in a study stream's order: when it was recorded (the database's
    clock), then its experiment's id, then its number. Written as the event id
    ``<microseconds since 1970>-<experiment id>-<epoch>``."""

    recorded_at: datetime
    experiment_id: str
    epoch: int

    @classmethod
    def of(cls, recorded_at: datetime, experiment_id: str, epoch: int) -> "StudyPosition":
        """The position of a row as read (SQLite hands back naive UTC timestamps)."""
        aware = recorded_at if recorded_at.tzinfo else recorded_at.replace(tzinfo=UTC)
        return cls(aware, experiment_id, epoch)

    def text(self) -> str:
        micros = (self.recorded_at - _EPOCH) // _MICROSECOND
        return f"{micros}-{self.experiment_id}-{self.epoch}"


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
    """A study's status, counts, its experiments' states and the epochs not yet seen (each
    with its position, in stream order)."""

    status: Status
    progress: dict[str, int]
    runs: list[RunState]
    epochs: list[tuple[StudyPosition, EpochMetrics]]

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


_STREAM_ORDER = (  # StudyPosition's
    col(EpochRecord.recorded_at),
    col(EpochRecord.experiment_id),
    col(EpochRecord.epoch),
)


def study_state(engine: Engine, study_id: str, seen: dict[str, int]) -> StudyState | None:
    """The study's state and, per experiment, the epochs after those in ``seen`` (keyed by
    experiment id); None once it is gone."""
    with session_scope(engine) as session:
        study = session.get(Study, study_id)
        if study is None:
            return None
        experiments = study_experiments(session, study_id)
        behind = {
            experiment.id: after
            for experiment in experiments
            if experiment.epochs_done > (after := seen.get(experiment.id, 0))
        }
        epochs: list[tuple[StudyPosition, EpochMetrics]] = []
        if behind:
            newer = (
                and_(col(EpochRecord.experiment_id) == key, col(EpochRecord.epoch) > after)
                for key, after in behind.items()
            )
            rows = session.exec(
                select(EpochRecord.recorded_at, EpochRecord.experiment_id, *METRIC_COLUMNS)
                .where(or_(*newer))
                .order_by(*_STREAM_ORDER)
            )
            for at, key, *values in rows:
                metrics = EpochMetrics(*values)
                epochs.append((StudyPosition.of(at, key, metrics.epoch), metrics))
        return StudyState(
            status=status_of(experiments, trials_to_come(study)),
            progress=progress(experiments),
            runs=[RunState.of(experiment) for experiment in experiments],
            epochs=epochs,
        )


def seen_at(engine: Engine, study_id: str, position: StudyPosition | None) -> dict[str, int]:
    """What a client that saw ``position`` has seen: per experiment of the study, its newest
    epoch at or before ``position`` in stream order.

    Each experiment's epochs are stamped in the order they commit; two experiments' can
    commit out of stamp order within one transaction's time. A live stream still sends such
    a late epoch (it goes by each experiment's newest epoch sent); a client that reconnects
    in that instant, holding a position past the late epoch's stamp, would not get it."""
    if position is None:
        return {}
    at, key = position.recorded_at, position.experiment_id
    not_after = or_(
        col(EpochRecord.recorded_at) < at,
        and_(
            col(EpochRecord.recorded_at) == at,
            or_(
                col(EpochRecord.experiment_id) < key,
                and_(
                    col(EpochRecord.experiment_id) == key, col(EpochRecord.epoch) <= position.epoch
                ),
            ),
        ),
    )
    members = select(Experiment.id).where(Experiment.study_id == study_id)
    with session_scope(engine) as session:
        rows = session.exec(
            select(EpochRecord.experiment_id, func.max(EpochRecord.epoch))
            .where(col(EpochRecord.experiment_id).in_(members), not_after)
            .group_by(col(EpochRecord.experiment_id))
        )
        return {experiment_id: newest for experiment_id, newest in rows}


def parse_experiment_position(text: str | None) -> int:
    """The epoch a Last-Event-ID names; anything else counts as nothing seen."""
    return _count(text or "") or 0


def parse_study_position(text: str | None) -> StudyPosition | None:
    """The position a Last-Event-ID names; one that ``StudyPosition.text`` cannot have
    written counts as nothing seen (None)."""
    match = _STUDY_POSITION.fullmatch(text or "")
    epoch = _count(match.group(3)) if match else None
    if match is None or epoch is None:
        return None
    at = _EPOCH + int(match.group(1)) * _MICROSECOND
    return StudyPosition(at, match.group(2), epoch)


def _count(text: str) -> int | None:
    """A count in ASCII digits below 2**31 (an integer column on PostgreSQL), or None; not
    ``str.isdigit``, which accepts ``²`` (that ``int`` refuses)."""
    count = int(text) if _DIGITS.fullmatch(text) else None
    return count if count is not None and count <= MAX_COUNT else None
