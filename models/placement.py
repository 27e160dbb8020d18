"""Which accelerators a run's ``resources`` accept, and how to say what it waits for. The
claim's SQL (``store.placement``) applies the same rule in the database."""

from collections.abc import Iterable, Mapping
from typing import Any

from models.accelerator import CPU, Accelerator
from models.spec import Resources


def resources_of(spec: Mapping[str, Any]) -> Resources:
    """The resources a stored spec asks for (any worker for a spec from before they were)."""
    return Resources.model_validate(spec.get("resources") or {})


def fits(resources: Resources, accelerator: Accelerator) -> bool:
    """Whether a worker computing on ``accelerator`` may take a run asking for ``resources``:
    a CPU worker takes runs asking for any or cpu without a memory floor; a GPU worker takes
    those asking for any, gpu or a part of its name, with at least ``min_memory_mb``."""
    wanted = resources.accelerator.lower()
    if accelerator.name == CPU.name:
        return wanted in ("any", "cpu") and resources.min_memory_mb is None
    named = wanted in ("any", "gpu") or (wanted != "cpu" and wanted in accelerator.name.lower())
    floor = resources.min_memory_mb
    return named and (floor is None or (accelerator.memory_mb or 0) >= floor)


def fits_any(resources: Resources, accelerators: Iterable[Accelerator]) -> bool:
    """Whether one of ``accelerators`` may take the run."""
    return any(fits(resources, accelerator) for accelerator in accelerators)


def described(resources: Resources) -> str:
    """What the run waits for, in words: "a GPU with at least 40000 MB"."""
    wanted = resources.accelerator
    if wanted.lower() == "cpu":
        return "a CPU worker"
    if wanted.lower() in ("any", "gpu"):
        what = "a GPU" if wanted.lower() == "gpu" or resources.min_memory_mb else "any worker"
    else:
        what = f"a GPU whose name contains {wanted!r}"
    floor = resources.min_memory_mb
    return what if floor is None else f"{what} with at least {floor} MB"
