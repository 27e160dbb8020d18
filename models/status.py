"""An experiment's status and priority, shared by the API, the worker and the database's
tables."""

from enum import StrEnum


class Priority(StrEnum):
    """Which queued runs start first; within one, users take turns (``store.queue``)."""

    low = "low"
    normal = "normal"
    high = "high"


class Status(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    paused = "paused"


ACTIVE = (Status.queued, Status.running, Status.paused)
"""Statuses of an experiment that has not ended (a paused one trains on once resumed)."""
