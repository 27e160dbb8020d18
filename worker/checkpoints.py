"""A model with its optimizer state as bytes (a ``.keras`` archive) and back."""

import logging
import tempfile
from pathlib import Path

import keras

log = logging.getLogger(__name__)


def to_bytes(model: keras.Model) -> bytes:
    """Architecture, weights and optimizer state, as Keras saves them."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.keras"
        model.save(path)
        return path.read_bytes()


def from_bytes(data: bytes) -> keras.Model:
    """The compiled model saved by ``to_bytes``; loads in Keras' safe mode (no code)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.keras"
        path.write_bytes(data)
        return keras.models.load_model(path, safe_mode=True)


def newest_loadable(candidates: list[tuple[int, bytes | None]]) -> tuple[int, keras.Model | None]:
    """The newest checkpoint that loads, as (epoch, model); (0, None) for a fresh start.

    A corrupt or half-written checkpoint (failed hash, unreadable archive) is skipped.
    """
    for epoch, data in candidates:
        if data is None:
            log.warning("checkpoint of epoch %d fails its hash; trying an older one", epoch)
            continue
        try:
            return epoch, from_bytes(data)
        except Exception as exc:
            log.warning(
                "checkpoint of epoch %d does not load (%s); trying an older one", epoch, exc
            )
    return 0, None
