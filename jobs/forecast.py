"""Each queued run's place in line and when it should start: the fair-share order
(``store.queue``) played out on the workers heard from lately, each run lasting its epochs left
times the recent seconds per epoch of similar runs."""

import heapq
import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from store.queue import read_line, recent_epoch_seconds, running_runs, serve_order, specs_of
from store.workers import live_workers


@dataclass(frozen=True)
class Place:
    position: int
    """1: the next run a free worker starts."""
    eta_seconds: float | None
    """Seconds until it starts; None when a run ahead of it (or a worker's current run) has
    no similar run timed lately, or no worker is up."""


def forecast(session: Session, *, seen_within_s: float) -> dict[str, Place]:
    """The place of every queued run, by id."""
    order = serve_order(read_line(session))
    if not order:
        return {}
    running = running_runs(session)
    pace = Pace(recent_epoch_seconds(session))
    specs = specs_of(session, [run.id for run in order])
    workers = len(live_workers(session, seen_within_s=seen_within_s))
    busy = [pace.seconds(spec, left) for spec, left in running]
    free_at = busy + [0.0] * max(workers - len(busy), 0) if workers else []
    heapq.heapify(free_at)
    places = {}
    for position, run in enumerate(order, start=1):
        if not free_at:  # no worker is up
            places[run.id] = Place(position, None)
            continue
        start = heapq.heappop(free_at)
        places[run.id] = Place(position, start if math.isfinite(start) else None)
        heapq.heappush(free_at, start + pace.seconds(specs.get(run.id), run.epochs_left))
    return places


class Pace:
    """Recent seconds per epoch (the median), by how alike two specs are: the same dataset,
    subset, model and batch size; else the same dataset."""

    def __init__(self, timed: list[tuple[dict[str, Any], float]]) -> None:
        exact: dict[str, list[float]] = {}
        dataset: dict[str, list[float]] = {}
        for spec, seconds in timed:
            exact.setdefault(_alike(spec), []).append(seconds)
            dataset.setdefault(_dataset(spec), []).append(seconds)
        self.exact = {key: statistics.median(values) for key, values in exact.items()}
        self.dataset = {key: statistics.median(values) for key, values in dataset.items()}

    def seconds(self, spec: dict[str, Any] | None, epochs: int) -> float:
        """How long ``epochs`` of a run of ``spec`` should take; inf when nothing alike ran."""
        if spec is None:
            return math.inf
        per_epoch = self.exact.get(_alike(spec), self.dataset.get(_dataset(spec)))
        return math.inf if per_epoch is None else per_epoch * epochs


def _dataset(spec: dict[str, Any]) -> str:
    return str(spec.get("dataset", {}).get("name"))


def _alike(spec: dict[str, Any]) -> str:
    training = spec.get("training", {})
    return json.dumps(
        [spec.get("dataset"), spec.get("model"), training.get("batch_size")], sort_keys=True
    )
