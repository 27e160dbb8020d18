"""State changes a training run makes: claim, one row per finished epoch, and the end."""

from dataclasses import asdict, dataclass, fields

from sqlalchemy import Engine, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from core.db import session_scope
from core.tables import EpochRecord, Experiment, Status, utcnow


@dataclass(frozen=True)
class EpochMetrics:
    """One finished epoch, as the worker records it and the history endpoint serves it."""

    epoch: int
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float

    @classmethod
    def of(cls, record: EpochRecord) -> "EpochMetrics":
        return cls(**{field.name: getattr(record, field.name) for field in fields(cls)})


def claim(engine: Engine, experiment_id: str) -> Experiment | None:
    """Move a queued experiment to running, atomically; None if it is not queued any more."""
    with session_scope(engine) as session:
        claimed = session.exec(
            update(Experiment)
            .where(col(Experiment.id) == experiment_id, col(Experiment.status) == Status.queued)
            .values(
                status=Status.running,
                started_at=utcnow(),
                attempts=col(Experiment.attempts) + 1,
            )
        )
        if claimed.rowcount == 0:
            return None
        return session.get(Experiment, experiment_id)


def record_epoch(engine: Engine, experiment_id: str, metrics: EpochMetrics) -> None:
    """Upsert one epoch's row and refresh the experiment's progress, ``final`` and ``best``."""
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    values = asdict(metrics) | {"experiment_id": experiment_id, "recorded_at": utcnow()}
    statement = insert(EpochRecord).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["experiment_id", "epoch"],
        set_={
            key: statement.excluded[key] for key in values if key not in ("experiment_id", "epoch")
        },
    )
    with session_scope(engine) as session:
        session.exec(statement)
        rows = session.exec(select(EpochRecord).where(EpochRecord.experiment_id == experiment_id))
        epochs = sorted(rows, key=lambda row: row.epoch)
        last = epochs[-1]
        best = max(epochs, key=lambda row: (row.val_accuracy or 0.0, -row.epoch))
        session.exec(
            update(Experiment)
            .where(col(Experiment.id) == experiment_id)
            .values(
                epochs_done=last.epoch,
                final={
                    "accuracy": last.accuracy,
                    "loss": last.loss,
                    "val_accuracy": last.val_accuracy,
                    "val_loss": last.val_loss,
                },
                best={
                    "epoch": best.epoch,
                    "val_accuracy": best.val_accuracy,
                    "val_loss": best.val_loss,
                },
            )
        )


def cancel_requested(engine: Engine, experiment_id: str) -> bool:
    """Whether someone asked this experiment to stop."""
    with session_scope(engine) as session:
        experiment = session.get(Experiment, experiment_id)
        return experiment is None or experiment.cancel_requested


def release(engine: Engine, experiment_id: str) -> None:
    """Put an interrupted run back in the queue; it will start again from its first epoch."""
    with session_scope(engine) as session:
        session.exec(delete(EpochRecord).where(col(EpochRecord.experiment_id) == experiment_id))
        session.exec(
            update(Experiment)
            .where(col(Experiment.id) == experiment_id)
            .values(status=Status.queued, epochs_done=0, final=None, best=None)
        )


def finish(engine: Engine, experiment_id: str, status: Status, error: str | None = None) -> None:
    """Record how a run ended."""
    with session_scope(engine) as session:
        session.exec(
            update(Experiment)
            .where(col(Experiment.id) == experiment_id)
            .values(status=status, error=error, finished_at=utcnow())
        )
