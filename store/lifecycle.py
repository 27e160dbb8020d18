"""Pausing, resuming and continuing experiments: the API's side of a run's lifecycle (the
worker's side is in ``store.runs``)."""

import hashlib
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from store.experiments import Conflict, create_experiment
from store.tables import ACTIVE, Checkpoint, Experiment, Priority, Status


def pause(session: Session, experiment: Experiment) -> Experiment:
    """Pause at once if queued (a worker that takes its message will not claim it); ask the
    trainer to checkpoint and stop if running; Conflict otherwise."""
    queued = _move(session, experiment, Status.queued, status=Status.paused)
    if not queued and not _move(session, experiment, Status.running, pause_requested=True):
        raise Conflict(
            f"Experiment {experiment.id} is {experiment.status}; "
            "only queued or running experiments can be paused."
        )
    return experiment


def resume(session: Session, experiment: Experiment) -> Experiment:
    """Put a paused experiment back in the queue (the caller publishes it); Conflict unless
    it is paused."""
    if not _move(
        session,
        experiment,
        Status.paused,
        status=Status.queued,
        pause_requested=False,
        dispatched_at=None,
    ):
        raise Conflict(
            f"Experiment {experiment.id} is {experiment.status}, not paused; "
            "only a paused experiment can be resumed."
        )
    return experiment


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


def _move(session: Session, experiment: Experiment, was: Status, /, **values: Any) -> bool:
    """Change the experiment if its status ``was`` this, committing; False if it was not."""
    moved = session.exec(
        update(Experiment)
        .where(col(Experiment.id) == experiment.id, col(Experiment.status) == was)
        .values(**values)
    )
    session.commit()
    session.refresh(experiment)
    return moved.rowcount == 1
