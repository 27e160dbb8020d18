"""Graceful stop: a shutting-down worker asks its training process to stop at a batch end;
one that does not stop can be asked where it is stuck."""

import faulthandler
import os
import signal
import threading
from types import FrameType

import billiard.process

STOP_SIGNAL = signal.SIGUSR2
STACKS_SIGNAL = signal.SIGURG
"""Prints every thread's stack to stderr: up.sh sends it before killing a worker that does
not stop (ignored by default, and used by neither Celery nor billiard)."""
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


def print_stacks_on_signal() -> None:
    """Make ``STACKS_SIGNAL`` print this process's threads' stacks to file descriptor 2 (in a
    pool process, ``sys.stderr`` is Celery's logging proxy); the pool processes forked after
    inherit it."""
    faulthandler.register(STACKS_SIGNAL, file=2, all_threads=True)
