"""Predictions in one warm child process, spawned (not forked) on the first request, so the
API process itself never imports TensorFlow."""

import asyncio
import importlib
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

PREDICT = ("worker.predict", "probabilities")
"""What the child runs, named rather than imported: the API imports nothing of the worker."""


class PredictorGone(RuntimeError):
    """The child process died during a prediction."""


class Predictor:
    """Runs ``PREDICT`` in the child, starting it when first needed."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def probabilities(
        self, checkpoint: bytes, digest: str, pixels: np.ndarray, pixel_max: int
    ) -> list[float]:
        if self._pool is None:
            spawn = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=spawn, initializer=_leave_interrupts_to_the_api
            )
        future = self._pool.submit(_call, *PREDICT, checkpoint, digest, pixels, pixel_max)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._pool = None
            raise PredictorGone(
                "The prediction process died (out of memory?); the next request starts a new one."
            ) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def _leave_interrupts_to_the_api() -> None:
    """In the child: Ctrl-C reaches the whole process group; the API stops this process
    itself, so a KeyboardInterrupt here would only print a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _call(module: str, name: str, *args: Any) -> Any:
    """In the child: import ``module`` and call its ``name``."""
    return getattr(importlib.import_module(module), name)(*args)
