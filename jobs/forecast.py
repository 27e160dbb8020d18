"""Each queued run's place in line and when it should start: the fair-share order
(``store.queue``) played out on the workers heard from lately, each run lasting its epochs left
times the recent seconds per epoch of similar runs, and no user having more runs going than
``CONVLAB_MAX_RUNNING_PER_USER``.

Forecasting reads and orders the whole queue (262 ms of CPU at 5,000 queued runs), so an API
process serves its last forecast (``Forecasts``) for up to ``FRESH_S``, while the numbers of
queued and running runs are those it was made at and it places every queued run asked about:
a read of a queued run costs one count, whatever the queue's length."""

import heapq
import itertools
import json
import math
import statistics
import threading
import time
import weakref
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

from models.accelerator import Accelerator
from models.placement import described, fits_any, resources_of
from store.db import Engine, Session, engine_of
from store.queue import (
    Waiting,
    queue_counts,
    read_line,
    recent_epoch_seconds,
    running_runs,
    serve_order,
    specs_of,
)
from store.workers import live_workers

FRESH_S = 5.0
"""How long a forecast is served while the queue's counts stay the same (the sweeper's
default interval): a priority changed, a worker come or gone, shows within this."""


@dataclass(frozen=True)
class Place:
    position: int | None
    """1: the next run a free worker starts; None when no worker up may take it."""
    eta_seconds: float | None
    """Seconds until it starts; None when a run ahead of it (or a worker's current run) has
    no similar run timed lately, or no worker is up (or may take it)."""
    workers_up: int
    """The workers heard from lately (0: none, the run waits until one starts)."""
    waiting_for: str | None = None
    """What it waits for when workers are up but none may take it (``models.placement``)."""


def forecast(
    session: Session, *, seen_within_s: float, max_running_per_user: int | None = None
) -> dict[str, Place]:
    """The place of every queued run, by id; a run that no worker up may take has none, but
    what it waits for."""
    order = serve_order(read_line(session))
    if not order:
        return {}
    pace = Pace(recent_epoch_seconds(session))
    specs = specs_of(session, [run.id for run in order])
    live = live_workers(session, seen_within_s=seen_within_s)
    accelerators = {
        Accelerator(worker.record.accelerator, worker.record.accelerator_memory_mb)
        for worker in live
    }
    workers = len(live)
    places = {}
    startable = []
    for run in order:
        resources = resources_of(specs.get(run.id, {}))
        if workers and not fits_any(resources, accelerators):
            places[run.id] = Place(None, None, workers, described(resources))
        else:
            startable.append(run)
    if not workers:  # no worker is up: the order alone
        starts = [(run, math.inf) for run in startable]
    else:
        running = [(pace.seconds(spec, left), owner) for spec, left, owner in running_runs(session)]
        starts = _played(
            _Line(startable, Counter(owner for _, owner in running), max_running_per_user),
            running,
            workers,
            lambda run: pace.seconds(specs.get(run.id), run.epochs_left),
        )
    for position, (run, start) in enumerate(starts, 1):
        places[run.id] = Place(position, start if math.isfinite(start) else None, workers)
    return places


class _Line:
    """The queued runs as free workers take them: the first in order whose user has fewer
    than ``cap`` runs going (``CONVLAB_MAX_RUNNING_PER_USER``; None: no cap)."""

    def __init__(self, order: list[Waiting], going: Counter[str | None], cap: int | None) -> None:
        self.by_user: dict[str | None, deque[tuple[int, Waiting]]] = defaultdict(deque)
        for index, run in enumerate(order):
            self.by_user[run.owner].append((index, run))
        self.going, self.cap = going, cap
        self.waiting = len(order)
        self.heads: list[tuple[int, str | None]] = []
        self.offered: set[str | None] = set()
        for owner in self.by_user:
            self._offer(owner)

    def take(self) -> Waiting | None:
        """The next run a free worker starts; None while every user waiting is at the cap."""
        if not self.heads:
            return None
        _, owner = heapq.heappop(self.heads)
        self.offered.discard(owner)
        _, run = self.by_user[owner].popleft()
        self.waiting -= 1
        self.going[owner] += 1
        self._offer(owner)
        return run

    def ended(self, owner: str | None) -> None:
        """One of ``owner``'s runs ended: they may start another."""
        self.going[owner] -= 1
        self._offer(owner)

    def left(self) -> list[Waiting]:
        """The runs not taken, in order."""
        return [run for _, run in sorted(item for runs in self.by_user.values() for item in runs)]

    def _offer(self, owner: str | None) -> None:
        runs = self.by_user[owner]
        below_cap = self.cap is None or self.going[owner] < self.cap
        if runs and below_cap and owner not in self.offered:
            heapq.heappush(self.heads, (runs[0][0], owner))
            self.offered.add(owner)


def _played(
    line: _Line,
    running: list[tuple[float, str | None]],
    workers: int,
    lasts: Callable[[Waiting], float],
) -> list[tuple[Waiting, float]]:
    """The queued runs in the order ``workers`` start them, each with when: a worker takes
    the line's next run when its current one ends (``running``: when each ends, whose it is).
    Runs that could start only after every run going has ended with no known end come last,
    at an unknown time (inf)."""
    ids = itertools.count()
    ends: list[tuple[float, int, tuple[str | None, ...]]] = [
        (end, next(ids), (owner,)) for end, owner in running
    ]
    ends += [(0.0, next(ids), ()) for _ in range(max(workers - len(running), 0))]
    heapq.heapify(ends)
    starts = []
    while ends and line.waiting:
        at, _, ending = heapq.heappop(ends)
        if ending:
            line.ended(ending[0])
        run = line.take()
        if run is not None:
            starts.append((run, at))
            heapq.heappush(ends, (at + lasts(run), next(ids), (run.owner,)))
            continue
        busy = [end for end, _, holder in ends if holder]
        if not busy:  # only users at the cap wait, with no run going that ends
            break
        heapq.heappush(ends, (min(busy), next(ids), ()))  # idle until the next run ends
    return starts + [(run, math.inf) for run in line.left()]


class Forecasts:
    """The last forecast of one database in this process, made again when it is older than
    ``FRESH_S``, when the numbers of queued and running runs changed (a run submitted,
    started, ended or cancelled), or when it does not place a queued run asked about. A served
    place's ETA is aged by the forecast's age. One read makes it at a time; the others wait
    for it and share it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made_at = -math.inf
        self.counts: tuple[int, int] | None = None
        self.places: dict[str, Place] = {}

    def places_of(
        self,
        session: Session,
        queued: Collection[str],
        *,
        seen_within_s: float,
        max_running_per_user: int | None,
    ) -> dict[str, Place]:
        """The places of the runs in ``queued`` that are still queued, by id."""
        counts = queue_counts(session)
        with self.lock:
            stale = (
                time.monotonic() - self.made_at >= FRESH_S
                or counts != self.counts
                or not all(run in self.places for run in queued)
            )
            if stale:
                self.places = forecast(
                    session,
                    seen_within_s=seen_within_s,
                    max_running_per_user=max_running_per_user,
                )
                self.counts, self.made_at = counts, time.monotonic()
            places, age = self.places, time.monotonic() - self.made_at
        return {run: _aged(places[run], age) for run in queued if run in places}


def _aged(place: Place, seconds: float) -> Place:
    """``place`` as it stands ``seconds`` after it was forecast."""
    if place.eta_seconds is None:
        return place
    return replace(place, eta_seconds=max(place.eta_seconds - seconds, 0.0))


_forecasts: "weakref.WeakKeyDictionary[Engine, Forecasts]" = weakref.WeakKeyDictionary()
_forecasts_lock = threading.Lock()


def served_places(
    session: Session,
    queued: Collection[str],
    *,
    seen_within_s: float,
    max_running_per_user: int | None,
) -> dict[str, Place]:
    """The places of the runs in ``queued`` from this process's last forecast of
    ``session``'s database (``Forecasts``)."""
    engine = engine_of(session)
    with _forecasts_lock:
        forecasts = _forecasts.setdefault(engine, Forecasts())
    return forecasts.places_of(
        session, queued, seen_within_s=seen_within_s, max_running_per_user=max_running_per_user
    )


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
