"""Preemption: a ``high`` run (and, with ``CONVLAB_PREEMPT_LOW``, a ``normal`` one) that has
waited over ``CONVLAB_PREEMPT_AFTER_S`` with no free worker it fits has the lowest-priority
running run its worker fits (the most recently started among equals) asked to yield. That run
checkpoints at its next batch end and goes back to the queue (``store.transitions.release``),
where the fair-share order serves the higher priority first. Each wait asks once; a
run preempted ``CONVLAB_MAX_PREEMPTIONS`` times is not asked again, and a run whose user is at
``CONVLAB_MAX_RUNNING_PER_USER`` asks none."""

import logging
from dataclasses import dataclass

from core.config import Settings
from models.accelerator import Accelerator
from models.placement import fits, resources_of
from models.spec import Resources
from models.status import Priority
from store.db import Engine, session_scope
from store.preemption import Holder, holders, waiters
from store.queue import RANK
from store.transitions import ask_to_yield
from store.workers import live_workers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Yield:
    """A running run asked to give its worker up for a waiting one."""

    running_id: str
    waiting_id: str


def preempt(engine: Engine, settings: Settings) -> list[Yield]:
    """Ask, for each run waiting past the setting with no free worker it fits, one running run
    of lower priority to yield; the requests made."""
    urgent = [Priority.high, Priority.normal] if settings.preempt_low else [Priority.high]
    with session_scope(engine) as session:
        waiting = waiters(
            session,
            waited_s=settings.preempt_after_s,
            priorities=urgent,
            max_running_per_user=settings.max_running_per_user,
        )
        if not waiting:
            return []
        running = holders(session, below=Priority.high, max_preemptions=settings.max_preemptions)
        free = [
            Accelerator(worker.record.accelerator, worker.record.accelerator_memory_mb)
            for worker in live_workers(session, seen_within_s=settings.workers_seen_s)
            if worker.experiment_id is None
        ]
    asked = []
    for waiter in waiting:
        resources = resources_of(waiter.spec)
        slot = next((accelerator for accelerator in free if fits(resources, accelerator)), None)
        if slot is not None:  # a worker it fits is free: it starts there without help
            free.remove(slot)
            continue
        victim = chosen(waiter.priority, resources, running)
        if victim is None:
            continue
        running.remove(victim)
        if ask_to_yield(engine, victim.id, waiter.id, max_preemptions=settings.max_preemptions):
            log.info("experiment %s asked to yield its worker to %s", victim.id, waiter.id)
            asked.append(Yield(victim.id, waiter.id))
    return asked


def chosen(priority: Priority, resources: Resources, running: list[Holder]) -> Holder | None:
    """The run to ask to yield for a run of ``priority`` asking for ``resources``: of those of
    lower priority whose worker it fits, the lowest priority, then the most recently started."""
    fitting = [
        holder
        for holder in running
        if RANK[holder.priority] > RANK[priority]
        and holder.accelerator is not None
        and fits(resources, holder.accelerator)
    ]
    return max(fitting, key=lambda holder: (RANK[holder.priority], holder.last_start), default=None)
