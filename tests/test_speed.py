"""Training faster without learning anything else: with the same seed on CPU, every speed
option gives the chapter's history (floats scaled before the model, one batch per call, no
XLA, batches sliced from host arrays) within float tolerance."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.build import Speed, as_input, build_model
from models.presets import resolve
from worker.checkpoints import from_bytes, to_bytes
from worker.datasets import prepare
from worker.resident import feed
from worker.training import reset_seed

pytestmark = pytest.mark.slow

SPEC = resolve("base", {"dataset": {"name": "digits"}, "training": {"epochs": 3, "batch_size": 64}})
CHAPTER_WAY = Speed(uint8_input=False)


def history(
    speed: Speed,
    *,
    on_device: bool = False,
    validation_split: float | None = None,
    resume_from: tuple[int, bytes] | None = None,
) -> dict[str, list[float]]:
    data = prepare("digits", Path("unused"), train_size=None, test_size=None, seed=SPEC.seed)
    reset_seed(SPEC.seed)
    if resume_from is None:
        initial_epoch, model = 0, build_model(SPEC, speed)
    else:
        initial_epoch, model = resume_from[0], from_bytes(resume_from[1])
    x_train, x_test = (as_input(model, x, 16) for x in (data.x_train, data.x_test))
    inputs = feed(model, x_train, x_test, on_device=on_device)
    validation: dict[str, Any] = (
        {"validation_data": (inputs.x_test, data.y_test)}
        if validation_split is None
        else {"validation_split": validation_split}
    )
    fitted = inputs.trainer.fit(
        inputs.x_train,
        data.y_train,
        batch_size=SPEC.training.batch_size,
        epochs=SPEC.training.epochs,
        initial_epoch=initial_epoch,
        verbose=0,
        **validation,
    )
    return {key: [float(value) for value in values] for key, values in fitted.history.items()}


@pytest.fixture(scope="module")
def chapter_history() -> dict[str, list[float]]:
    return history(CHAPTER_WAY)


@pytest.mark.parametrize(
    "speed",
    [
        Speed(),
        Speed(uint8_input=False, steps_per_execution=8),
        Speed(uint8_input=False, jit_compile=True),
        Speed(steps_per_execution=8, jit_compile=True),
    ],
    ids=["uint8 input", "8 steps per execution", "XLA", "all three"],
)
def test_a_speed_option_learns_what_the_chapter_way_learns(
    speed: Speed, chapter_history: dict[str, list[float]]
) -> None:
    faster = history(speed)
    assert faster.keys() == chapter_history.keys()
    for metric, values in chapter_history.items():
        np.testing.assert_allclose(faster[metric], values, rtol=1e-3, err_msg=metric)
    if not speed.jit_compile:  # the same arithmetic in the same order: the same bits
        assert faster == chapter_history
    assert chapter_history["val_accuracy"][-1] > 0.8  # it learned: the comparison means something


@pytest.mark.parametrize(
    ("speed", "validation_split"),
    [(Speed(), None), (CHAPTER_WAY, None), (Speed(steps_per_execution=8), 0.2)],
    ids=["uint8 input", "float input", "8 steps, validation split"],
)
def test_data_kept_on_the_device_gives_the_same_bits(
    speed: Speed, validation_split: float | None
) -> None:
    """Batches looked up by row in a device table: the same pictures in the same order."""
    from_host = history(speed, validation_split=validation_split)
    assert history(speed, on_device=True, validation_split=validation_split) == from_host
    assert from_host["val_accuracy"][-1] > 0.7


def test_a_resumed_run_trains_on_the_device_as_from_host() -> None:
    """A checkpoint's model (its optimizer state included) wrapped for the device table."""
    data = prepare("digits", Path("unused"), train_size=None, test_size=None, seed=SPEC.seed)
    reset_seed(SPEC.seed)
    model = build_model(SPEC)
    model.fit(data.x_train, data.y_train, batch_size=SPEC.training.batch_size, verbose=0)
    checkpoint = (1, to_bytes(model))
    from_host = history(Speed(), resume_from=checkpoint)
    assert len(from_host["loss"]) == SPEC.training.epochs - 1
    assert history(Speed(), on_device=True, resume_from=checkpoint) == from_host
