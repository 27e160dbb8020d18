"""Each training process's heartbeat (``store.workers``) and the accelerator it reports: the
first GPU it may use as NVIDIA's driver names it (NVML, through nvidia-ml-py), or "cpu" where
there is no driver. NVML is asked, not TensorFlow, so the prefork parent can check before
serving (``CONVLAB_REQUIRE_GPU``) without loading TensorFlow."""

import logging
import os
import threading
import time
from functools import cache
from typing import Protocol

import pynvml

from core.config import Settings
from models.accelerator import CPU, Accelerator
from store.db import get_engine
from store.outages import is_transient
from store.workers import beat
from worker.leases import this_process

log = logging.getLogger(__name__)


def _visible_gpu() -> int | None:
    """The NVML index of the first GPU this process may use (``CUDA_VISIBLE_DEVICES``' first),
    or None when it may use none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(visible) if visible.isdigit() else None  # "" or "-1" hides every GPU


@cache
def accelerator() -> Accelerator:
    """The first GPU this process may use, or CPU (also where NVML finds no driver)."""
    index = _visible_gpu()
    if index is None:
        return CPU
    try:
        pynvml.nvmlInit()
        try:
            device = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(device)
            memory = pynvml.nvmlDeviceGetMemoryInfo(device).total
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return CPU
    return Accelerator(name if isinstance(name, str) else name.decode(), int(memory) // 2**20)


def gpu_use() -> tuple[int | None, int | None]:
    """The GPU's utilization (percent of the last sample period) and memory in use (MB) now;
    (None, None) without one."""
    index = _visible_gpu()
    if index is None or accelerator() == CPU:
        return None, None
    try:
        pynvml.nvmlInit()
        try:
            device = pynvml.nvmlDeviceGetHandleByIndex(index)
            busy = pynvml.nvmlDeviceGetUtilizationRates(device).gpu
            used = pynvml.nvmlDeviceGetMemoryInfo(device).used
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return None, None
    return int(busy), int(used) // 2**20


def refuse_without_gpu(settings: Settings) -> str | None:
    """Why a worker with ``CONVLAB_REQUIRE_GPU`` must not start here, or None."""
    if not settings.require_gpu or accelerator() != CPU:
        return None
    return (
        "CONVLAB_REQUIRE_GPU is true but this worker sees no GPU: NVIDIA's driver (NVML) found "
        "none it may use (check the driver, CUDA_VISIBLE_DEVICES, and that the container gets "
        "the GPU, e.g. compose's device reservation), so it does not start."
    )


class Slotted(Protocol):
    """The slot a process holds, as its heartbeat reports it (``worker.slots.Slot``)."""

    @property
    def index(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def memory_mb(self) -> int | None: ...


class Heartbeat(threading.Thread):
    """Beats for this process every ``heartbeat_seconds`` until the process ends; a database
    that cannot be reached only skips beats."""

    def __init__(self, settings: Settings, slot: Slotted) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.every = settings.heartbeat_seconds
        self.slot = slot

    def run(self) -> None:
        name, gpu = this_process(), accelerator()
        host = name.rsplit("/", 2)[0]
        while True:
            try:
                busy, used_mb = gpu_use()
                beat(
                    get_engine(),
                    name,
                    host=host,
                    pid=os.getpid(),
                    accelerator=gpu,
                    gpu_use=(busy, used_mb),
                    slot=(self.slot.index, self.slot.count, self.slot.memory_mb),
                )
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("heartbeat of %s failed", name)
            time.sleep(self.every)
