"""Continuing an ended experiment as a new run from its checkpoint (pausing and resuming, like
every change of status, are in ``store.transitions``)."""

import hashlib
from typing import Any

from sqlmodel import Session

from models.status import ACTIVE, Priority
from store.experiments import Conflict, create_experiment
from store.tables import Checkpoint, Experiment


def check_continuable(experiment: Experiment) -> None:
    """Conflict while the experiment may still train: continue from where it ended."""
    if experiment.status in ACTIVE:
        raise Conflict(
            f"Experiment {experiment.id} is {experiment.status}; continue it once it has "
            "ended (or cancel it first)."
        )


def continue_experiment(
    session: Session,
    parent: Experiment,
    checkpoint: tuple[int, bytes],
    *,
    spec: dict[str, Any],
    owner: str | None,
    priority: Priority,
) -> Experiment:
    """Store a queued experiment that trains on from ``parent``'s checkpoint (epoch, bytes):
    the checkpoint is copied as the child's own at that epoch, where its resume starts, and its
    epochs are numbered after it (the caller commits, then dispatches)."""
    offset, data = checkpoint
    child = create_experiment(
        session,
        name=parent.name,
        spec=spec,
        owner=owner,
        parent_id=parent.id,
        priority=priority,
    )
    child.epoch_offset = child.epochs_done = offset
    session.flush()  # the row the checkpoint refers to
    session.add(
        Checkpoint(
            experiment_id=child.id,
            epoch=offset,
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
        )
    )
    return child
