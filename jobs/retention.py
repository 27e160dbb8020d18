"""The retention pass the API runs beside its sweeper: old runs' weights beyond what the
retention setting keeps are removed, and their space given back to the disk."""

import logging
from datetime import UTC, datetime, timedelta

from core.config import Settings
from store.db import Engine
from store.storage import Keep, prune_ended_days_ago, reclaim
from store.tables import Experiment

log = logging.getLogger(__name__)

KEPT = {
    Keep.final: "only their trained model",
    Keep.best_of_study: "only their trained model, and in a study only its best run's",
    Keep.none: "no weights",
}


def keep_storage(engine: Engine, settings: Settings) -> None:
    """One pass; nothing to do while ``retention_days`` is unset."""
    if settings.retention_days is None:
        return
    keep, days = Keep(settings.retention_keep), settings.retention_days
    removed, cutoff = prune_ended_days_ago(engine, keep=keep, days=days)
    if removed:
        log.info(
            "retention removed %d stored weight file(s) of runs ended before %s", removed, cutoff
        )
        reclaim(engine)


def give_back_space(engine: Engine) -> None:
    """``reclaim`` after a delete, in the background: a failure is logged (the next pass or
    delete tries again), never raised to anyone."""
    try:
        reclaim(engine)
    except Exception:
        log.exception("could not give deleted weights' space back to the disk")


def removal_note(experiment: Experiment, settings: Settings) -> str:
    """Why a run may lack weights it once had ("" unless the retention setting removed them)."""
    ended = experiment.finished_at
    if settings.retention_days is None or experiment.pinned or ended is None:
        return ""
    ended = ended if ended.tzinfo else ended.replace(tzinfo=UTC)  # SQLite's are naive
    if datetime.now(UTC) - ended < timedelta(days=settings.retention_days):
        return ""
    keep = Keep(settings.retention_keep)
    return (
        f"; runs that ended over {settings.retention_days:g} days ago keep {KEPT[keep]} "
        f"(CONVLAB_RETENTION_KEEP={keep}), unless pinned"
    )
