"""Training faster without learning anything else: with the same seed on CPU, every speed
option gives the chapter's history (floats scaled before the model, one batch per call, no
XLA) within float tolerance."""

from pathlib import Path

import numpy as np
import pytest

from models.build import Speed, as_input, build_model
from models.presets import resolve
from worker.datasets import prepare
from worker.training import reset_seed

pytestmark = pytest.mark.slow

SPEC = resolve("base", {"dataset": {"name": "digits"}, "training": {"epochs": 3, "batch_size": 64}})
CHAPTER_WAY = Speed(uint8_input=False)


def history(speed: Speed) -> dict[str, list[float]]:
    data = prepare("digits", Path("unused"), train_size=None, test_size=None, seed=SPEC.seed)
    reset_seed(SPEC.seed)
    model = build_model(SPEC, speed)
    x_train, x_test = (as_input(model, x, 16) for x in (data.x_train, data.x_test))
    fitted = model.fit(
        x_train,
        data.y_train,
        batch_size=SPEC.training.batch_size,
        epochs=SPEC.training.epochs,
        validation_data=(x_test, data.y_test),
        verbose=0,
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
