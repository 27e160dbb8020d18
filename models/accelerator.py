"""What a training process computes on, as workers report it and attempts record it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    """What a training process computes on: a GPU's name and memory, or "cpu"."""

    name: str
    memory_mb: int | None = None


CPU = Accelerator("cpu")
