"""Plausible learning-curve numbers for filling stores with histories (no dependencies, so the
MLflow filler, which runs in its own environment, can import it too)."""

import math
import random

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def curve(epoch: int, rng: random.Random) -> dict[str, float]:
    """One epoch's metrics and seconds; what is stored does not matter for reads."""
    progress = 1 - math.exp(-epoch / 12)
    noise = rng.uniform(-0.01, 0.01)
    return {
        "loss": 1.9 - 1.6 * progress + noise,
        "accuracy": 0.3 + 0.6 * progress + noise,
        "val_loss": 1.7 - 0.9 * progress + noise,
        "val_accuracy": 0.4 + 0.33 * progress + noise,
        "seconds": 2.0 + noise,
    }
