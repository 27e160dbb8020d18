"""This worker process as a lease owner: one process on one machine, named so that a worker on
the same machine can tell whether the holder of a run is gone (``store.transitions.claim``)."""

import os
import socket
from functools import cache
from pathlib import Path

from core.config import get_settings


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (None if there is no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@cache
def _host() -> str:
    """This machine's name in leases: ``CONVLAB_WORKER_NAME``, or its host name."""
    return get_settings().worker_name or socket.gethostname()


def this_process() -> str:
    """This process as a lease owner: ``host/pid/start-time`` (pids are reused, start times not)."""
    pid = os.getpid()
    return f"{_host()}/{pid}/{_start_time(pid)}"


def is_gone(owner: str) -> bool:
    """Whether ``owner`` is a process of this machine that no longer runs; owners on other
    machines are judged by their lease's expiry instead."""
    host, pid, started = owner.rsplit("/", 2)
    if host != _host():
        return False
    return _start_time(int(pid)) != started
