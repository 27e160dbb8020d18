"""The claim's filter: the queued runs a worker's accelerator satisfies, in SQL over the
``resources`` of each stored spec (the rule of ``models.placement.fits``)."""

from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, or_
from sqlmodel import col

from models.accelerator import CPU, Accelerator
from store.tables import Experiment


def fits(accelerator: Accelerator) -> ColumnElement[bool]:
    """True for the experiments a worker computing on ``accelerator`` may take."""
    spec: Any = col(Experiment.spec)
    wanted = func.lower(func.coalesce(spec[("resources", "accelerator")].as_string(), "any"))
    floor = spec[("resources", "min_memory_mb")].as_integer()
    if accelerator.name == CPU.name:
        return and_(wanted.in_(("any", "cpu")), floor.is_(None))
    name = literal(accelerator.name.lower())
    named = or_(wanted.in_(("any", "gpu")), and_(wanted != "cpu", name.like("%" + wanted + "%")))
    return and_(named, or_(floor.is_(None), floor <= (accelerator.memory_mb or 0)))
