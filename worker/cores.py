"""A training process's share of the machine. How many cores it is given: its CPU affinity
(``taskset``, a cpuset), capped by the CPU quota of its cgroup (``docker run --cpus``, compose's
``limits.cpus``), which TensorFlow does not read: under a quota it would start a thread per core
of the host. And its CPU priority: below an API on the same machine, which then keeps answering
while it trains (``CONVLAB_WORKER_NICE``)."""

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cores_given(cgroup: Path = CGROUP) -> int:
    """Cores this process may run on at once, at least one."""
    cores = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup)
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """The cgroup's CPU quota in cores (cgroup v2 ``cpu.max``, else v1's CFS quota), or None
    when it has none or none can be read."""
    try:
        if (cgroup / "cpu.max").exists():
            quota, period = (cgroup / "cpu.max").read_text().split()
            return None if quota == "max" else int(quota) / int(period)
        v1 = cgroup / "cpu"
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        period_us = int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else quota_us / period_us


def run_at_niceness(niceness: int) -> int:
    """Lower this process's CPU priority to ``niceness`` (every thread it has now, and so every
    thread they start), unless it is lower already: a process may lower its priority, never
    raise it. The niceness it runs at afterwards.

    Linux keeps a niceness per thread (``setpriority`` on a thread id), so a process that
    already runs threads (a heartbeat, a pool) needs each one set."""
    tasks = Path("/proc/self/task")
    threads = [int(task.name) for task in tasks.iterdir()] if tasks.is_dir() else [0]
    for thread in threads:
        try:
            current = os.getpriority(os.PRIO_PROCESS, thread)
            if current < niceness:
                os.setpriority(os.PRIO_PROCESS, thread, niceness)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
    return os.getpriority(os.PRIO_PROCESS, 0)
