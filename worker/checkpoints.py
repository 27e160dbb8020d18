"""A model with its optimizer state as bytes (a ``.keras`` archive) and back, and when a
running job takes one."""

import logging
import tempfile
import time
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


class Checkpointer:
    """When a running job saves its weights: at an epoch's end at most every ``seconds`` (and
    always at the last epoch), and whenever training stops with weights not saved yet. A worker
    that dies loses at most ``seconds`` of training; a fast GPU does not write a checkpoint
    into the database every fraction of a second."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.model: keras.Model | None = None
        self.saved_at = time.monotonic()
        self.unsaved = False
        self.held: bytes | None = None

    def watch(self, model: keras.Model) -> None:
        """Save ``model``, which starts where the newest checkpoint left off."""
        self.model = model
        self.saved_at = time.monotonic()

    def epoch_began(self) -> None:
        """Training moves the weights on from the last save."""
        self.unsaved = True

    def at_epoch_end(self, *, last: bool) -> bytes | None:
        """The checkpoint to store with this epoch's row, if one is due."""
        if last or time.monotonic() - self.saved_at >= self.seconds:
            return self._save()
        return None

    def at_train_end(self) -> None:
        """Training ended: hold the weights it reached for ``at_stop``, before a callback after
        this one (EarlyStopping's ``restore_best_weights``) puts older ones in the model."""
        self.held = self.at_stop()

    def at_stop(self) -> bytes | None:
        """The weights reached, if training moved them since the last save."""
        held, self.held = self.held, None
        if held is not None:
            return held
        return self._save() if self.unsaved else None

    def _save(self) -> bytes:
        assert self.model is not None, "watch(model) first"
        self.saved_at = time.monotonic()
        self.unsaved = False
        return to_bytes(self.model)
