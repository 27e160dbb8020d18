"""One finished epoch's numbers, as the worker records them and the API serves them."""

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochMetrics:
    """One finished epoch, as the worker records it and the history endpoint serves it (an
    ``EpochRecord`` without its keys)."""

    epoch: int
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    learning_rate: float | None = None
    """The optimizer's learning rate during the epoch (None in rows from before it was kept)."""
