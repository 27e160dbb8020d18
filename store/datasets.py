"""Which experiments use an uploaded dataset (the files themselves: ``models.upload_files``)."""

from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, not_, or_
from sqlmodel import Session, col, select

from models.datasets import DatasetInfo
from models.status import ACTIVE
from store.tables import Experiment


def using(
    session: Session, info: DatasetInfo, *, active: bool, limit: int = 5
) -> tuple[int, list[str]]:
    """How many experiments use the upload ``info``, and the ids of a few: unfinished ones
    (queued, running, paused), or ``active=False``, the others. An experiment uses it when its
    dataset record names it with its digest, or, submitted before records were kept, when its
    spec names it and it came after the upload."""
    named = col(Experiment.spec)["dataset", "name"].as_string() == info.name
    recorded = col(Experiment.dataset)["digest"].as_string() == info.sha256
    unrecorded: list[ColumnElement[bool]] = [col(Experiment.dataset).is_(None)]
    if info.created_at is not None:
        unrecorded.append(col(Experiment.created_at) >= datetime.fromisoformat(info.created_at))
    status = col(Experiment.status).in_(ACTIVE)
    uses = and_(named, or_(recorded, and_(*unrecorded)), status if active else not_(status))
    count = session.exec(select(func.count()).where(uses)).one()
    ids = session.exec(
        select(Experiment.id).where(uses).order_by(col(Experiment.created_at)).limit(limit)
    ).all()
    return count, list(ids)
