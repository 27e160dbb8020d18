"""Counters that add up across an API's processes. When uvicorn runs several (``--workers``),
each is a child of one supervisor; prometheus_client's multiprocess mode keeps every process's
counters in files of one folder, named after that supervisor, and ``/metrics`` sums them, so a
scrape answered by any process counts every process's requests. Must run before
prometheus_client is imported (``api/__init__``)."""

import multiprocessing
import os
import tempfile
from pathlib import Path

FOLDER = "PROMETHEUS_MULTIPROC_DIR"


def share_between_processes() -> None:
    """Point prometheus_client at the supervisor's folder when this is one of several API
    processes (a folder already set, by compose say, is kept)."""
    if os.environ.get(FOLDER) or multiprocessing.parent_process() is None:
        return
    supervisor = os.getppid()
    folder = Path(tempfile.gettempdir()) / f"convlab-metrics-{supervisor}-{_started(supervisor)}"
    folder.mkdir(exist_ok=True)
    os.environ[FOLDER] = str(folder)


def shared() -> bool:
    """Whether this process's counters are summed with its siblings'."""
    return bool(os.environ.get(FOLDER))


def _started(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot): a reused pid names a new folder."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"
