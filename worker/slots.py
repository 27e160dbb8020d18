"""Slots: a worker trains up to ``CONVLAB_JOBS_PER_GPU`` runs at once on each GPU it sees, each
in a training process of its own (a Celery pool process). The prefork parent sizes its pool to
the slot count; each pool process learns its slot from its pool index (billiard keeps the index
of a process that died for the one that replaces it), pins itself to its GPU before TensorFlow
loads (``CUDA_VISIBLE_DEVICES``) and caps its backend's memory on it at its share
(``worker.backends.configure``; JAX's through its environment, read when it loads), so one
run's growth cannot starve another. On a CPU worker the slots split the cores instead.

Only NVML is asked here (``worker.heartbeat``), never TensorFlow, so the parent can size its
pool without loading it."""

import os
from dataclasses import dataclass

import pynvml
from billiard.process import current_process

from core.config import Settings
from worker.cores import cores_given
from worker.heartbeat import accelerator

CUDA_CONTEXT_MB = 500
"""GPU memory a training process takes outside TensorFlow's allocator (CUDA context, cuDNN):
left out of each slot's share."""


@dataclass(frozen=True)
class Slot:
    """A training process's place in its worker: which slot of how many, on which GPU, with
    how much of its memory (None: as much as it grows to)."""

    index: int
    count: int
    gpu: str | None
    memory_mb: int | None


def visible_gpus() -> list[str]:
    """The GPUs this worker may use, as ``CUDA_VISIBLE_DEVICES`` names them (unset: every GPU
    NVML finds); none where it hides them all or there is no driver."""
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        gpus = []
        for entry in (part.strip() for part in named.split(",")):
            if not entry or entry.startswith("-"):  # CUDA stops at the first invalid entry
                break
            gpus.append(entry)
        return gpus
    try:
        pynvml.nvmlInit()
        try:
            return [str(index) for index in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return []


def slot_count(settings: Settings) -> int:
    """The worker's pool size: ``jobs_per_gpu`` on each GPU it sees, or on its CPU."""
    return settings.jobs_per_gpu * max(1, len(visible_gpus()))


def take_slot(settings: Settings) -> Slot:
    """Pin this pool process to its slot's GPU (before TensorFlow loads) and say which slot it
    holds. Slots fill GPU by GPU: with 2 per GPU, slots 0 and 1 share the first."""
    gpus = visible_gpus()
    count = slot_count(settings)
    index = _pool_index() % count
    if not gpus:
        return Slot(index, count, None, None)
    gpu = gpus[index // settings.jobs_per_gpu]
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    accelerator.cache_clear()  # the parent's answer named the first GPU, not this slot's
    total_mb = accelerator().memory_mb
    share_mb = memory_share_mb(settings, total_mb)
    if share_mb is not None and total_mb:  # JAX reads its share when it loads, not later
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true"
        os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{min(share_mb / total_mb, 1):.3f}"
    return Slot(index, count, gpu, share_mb)


def memory_share_mb(settings: Settings, gpu_memory_mb: int | None) -> int | None:
    """The GPU memory one slot's TensorFlow may take: the setting, else the GPU's memory shared
    among its slots less each one's CUDA context; None (grow as needed) for one slot a GPU."""
    if settings.gpu_memory_per_job_mb is not None:
        return settings.gpu_memory_per_job_mb
    if settings.jobs_per_gpu == 1 or gpu_memory_mb is None:
        return None
    return max(256, gpu_memory_mb // settings.jobs_per_gpu - CUDA_CONTEXT_MB)


_held: list[Slot] = []


def claim_slot(settings: Settings) -> Slot:
    """``take_slot``, remembered for this process (its heartbeat and TensorFlow read it)."""
    slot = take_slot(settings)
    _held[:] = [slot]
    return slot


def held_slot() -> Slot:
    """The slot this process took at fork (``claim_slot``); outside a pool, the one slot of a
    worker with the whole machine."""
    return _held[0] if _held else Slot(0, 1, None, None)


def threads(slot: Slot) -> int:
    """Compute threads for one slot: the cores given, shared among the worker's slots."""
    return max(1, cores_given() // slot.count)


def _pool_index() -> int:
    """This pool process's index in its pool (0 outside one)."""
    index = getattr(current_process(), "index", 0)
    return int(index) if isinstance(index, int) else 0
