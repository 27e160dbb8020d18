"""Each run's best model so far (``/model?weights=best``): replaced by its worker whenever an
epoch beats it on the run's monitored value."""

import hashlib

from sqlalchemy import Engine
from sqlmodel import select

from store.db import session_scope
from store.tables import BestCheckpoint


def save_best(
    engine: Engine, experiment_id: str, *, epoch: int, monitor: str, value: float, data: bytes
) -> None:
    """Keep ``data`` (a ``.keras`` archive) as the run's best model, after ``epoch``."""
    digest = hashlib.sha256(data).hexdigest()
    row = BestCheckpoint(
        experiment_id=experiment_id,
        epoch=epoch,
        monitor=monitor,
        value=value,
        data=data,
        sha256=digest,
    )
    with session_scope(engine) as session:
        session.merge(row)


def best_so_far(engine: Engine, experiment_id: str) -> tuple[int, float] | None:
    """The epoch and monitored value of the run's best model, or None."""
    query = select(BestCheckpoint.epoch, BestCheckpoint.value).where(
        BestCheckpoint.experiment_id == experiment_id
    )
    with session_scope(engine) as session:
        row = session.exec(query).first()
    return None if row is None else (row[0], row[1])


def best_model(engine: Engine, experiment_id: str) -> tuple[int, bytes] | None:
    """The run's best model as (epoch, ``.keras`` bytes); None if it has none that passes its
    hash."""
    with session_scope(engine) as session:
        row = session.get(BestCheckpoint, experiment_id)
    if row is None or hashlib.sha256(row.data).hexdigest() != row.sha256:
        return None
    return row.epoch, row.data
