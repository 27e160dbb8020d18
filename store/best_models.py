"""Reading each run's best model so far (``/model?weights=best``); its worker stores it under
its lease (``store.runs.keep_best``)."""

import hashlib

from sqlalchemy import Engine
from sqlmodel import select

from store.db import session_scope
from store.tables import BestCheckpoint


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
