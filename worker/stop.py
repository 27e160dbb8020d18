"""Graceful stop: a shutting-down worker asks its training process to stop at a batch end."""

import os
import signal
import threading
from types import FrameType

import billiard.process

STOP_SIGNAL = signal.SIGUSR2
stop_requested = threading.Event()
"""Set in a pool process once its worker is shutting down."""


def listen_for_stop() -> None:
    """In a pool process, once it runs a job: turn the stop signal into ``stop_requested``."""

    def _handler(_signum: int, _frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(STOP_SIGNAL, _handler)


def stop_pool_processes() -> None:
    """In the worker's main process: ask every pool process to stop its job."""
    for child in billiard.process.active_children():
        if child.pid is not None:
            os.kill(child.pid, STOP_SIGNAL)
