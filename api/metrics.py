"""Prometheus metrics for ``GET /metrics``: experiments by status and the queue, read from the
database at each scrape; epochs completed and their durations, from the rows workers write
(the workers' metrics reach Prometheus through the database); and the API's own requests.
Figures about each user (the bytes their runs hold) are shown to admins only."""

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.shared_metrics import shared
from models.status import Priority, Status
from store.db import Engine, session_scope
from store.monitoring import epochs_recorded_after, experiments_by_status, queued_by_priority
from store.storage import stored_bytes
from store.tables import WorkerRecord, utcnow
from store.workers import live_workers

EPOCH_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
LATE_COMMIT = timedelta(seconds=120)
"""How far back each scrape looks again for epoch rows committed after a later-stamped one."""


class ExperimentsCollector(Collector):
    """Experiments by status, the queue's depth (also by priority) and the live workers' GPU
    readings, read at scrape time."""

    def __init__(self, engine: Engine, workers_seen_s: float) -> None:
        self.engine = engine
        self.workers_seen_s = workers_seen_s

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.engine) as session:
            counts = experiments_by_status(session)
            waiting = queued_by_priority(session)
            workers = [
                live.record for live in live_workers(session, seen_within_s=self.workers_seen_s)
            ]
        by_status = GaugeMetricFamily(
            "convlab_experiments", "Experiments in each status.", labels=["status"]
        )
        for status in Status:
            by_status.add_metric([status.value], counts.get(status.value, 0))
        yield by_status
        yield GaugeMetricFamily(
            "convlab_queue_depth",
            "Experiments queued and waiting for a worker.",
            value=counts.get(Status.queued.value, 0),
        )
        by_priority = GaugeMetricFamily(
            "convlab_queue_depth_by_priority",
            "Experiments queued, by priority.",
            labels=["priority"],
        )
        for priority in Priority:
            by_priority.add_metric([priority.value], waiting.get(priority.value, 0))
        yield by_priority
        yield from _gpu_readings(workers)


class PerUserCollector(Collector):
    """The bytes of weights each user's runs hold, read at scrape time (for admins)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.engine) as session:
            stored = stored_bytes(session)
        by_user = GaugeMetricFamily(
            "convlab_stored_bytes",
            "Bytes of weights (checkpoints and best epochs) each user's runs hold.",
            labels=["user"],
        )
        for user, size in sorted(stored.items(), key=lambda item: item[0] or ""):
            by_user.add_metric([user or ""], size)
        yield by_user


def _gpu_readings(workers: list[WorkerRecord]) -> Iterator[Metric]:
    """Each live worker's GPU use at its last heartbeat (workers without NVML have none)."""
    labels = ["worker", "host", "accelerator"]
    busy = GaugeMetricFamily(
        "convlab_worker_gpu_utilization_percent",
        "Percent of the last sample period the worker's GPU was busy (NVML).",
        labels=labels,
    )
    memory = GaugeMetricFamily(
        "convlab_worker_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=labels
    )
    for worker in workers:
        names = [worker.name, worker.host, worker.accelerator]
        if worker.gpu_utilization is not None:
            busy.add_metric(names, worker.gpu_utilization)
        if worker.gpu_memory_used_mb is not None:
            memory.add_metric(names, worker.gpu_memory_used_mb * 2**20)
    yield busy
    yield memory


class EpochWatcher:
    """Counts the epochs workers finish and observes their durations, once per epoch row.

    Rows are read from the database, so any worker on any machine counts; a row is counted
    once even when a later pass reads it again. One API process reads them at each scrape; of
    several, the one holding the loops' lock reads them in its loop (their counts are summed:
    ``api.shared_metrics``), and one that takes the lock over counts the rows from then on."""

    def __init__(self, engine: Engine, registry: CollectorRegistry | None) -> None:
        self.engine = engine
        self.since = utcnow()
        self.counted: dict[tuple[str, int, str], float] = {}
        self.lock = threading.Lock()
        self.completed = Counter(
            "convlab_epochs_completed", "Epochs finished by workers.", registry=registry
        )
        self.duration = Histogram(
            "convlab_epoch_duration_seconds",
            "Seconds per finished epoch, as the worker measured it.",
            buckets=EPOCH_SECONDS_BUCKETS,
            registry=registry,
        )

    def observe_new(self, *, counting_since: datetime | None = None) -> None:
        """Count the rows recorded since the last pass (none before ``counting_since``)."""
        with self.lock:
            self._observe_new(counting_since)

    def _observe_new(self, counting_since: datetime | None) -> None:
        after = self.since - LATE_COMMIT
        if counting_since is not None:
            after = max(after, counting_since)
        with session_scope(self.engine) as session:
            rows = epochs_recorded_after(session, after=after)
            fresh = [
                (row.experiment_id, row.epoch, str(row.recorded_at), row.seconds) for row in rows
            ]
        now = time.monotonic()
        for experiment_id, epoch, recorded_at, seconds in fresh:
            key = (experiment_id, epoch, recorded_at)
            if key not in self.counted:
                self.counted[key] = now
                self.completed.inc()
                self.duration.observe(seconds)
        horizon = now - 2 * LATE_COMMIT.total_seconds()
        self.counted = {key: seen for key, seen in self.counted.items() if seen > horizon}
        self.since = utcnow()


class ApiMetrics:
    """What ``/metrics`` serves: the database's gauges, and the instruments of this process, or
    of all the API's processes when they are several (``api.shared_metrics``); to an admin
    (or anyone, with auth off), the per-user figures too."""

    def __init__(self, engine: Engine, *, workers_seen_s: float) -> None:
        self.shared = shared()
        self.registry = CollectorRegistry()
        self.per_user = CollectorRegistry()
        self.per_user.register(PerUserCollector(engine))
        if self.shared:
            MultiProcessCollector(self.registry)
        self.registry.register(ExperimentsCollector(engine, workers_seen_s))
        own = None if self.shared else self.registry  # shared: written to the common files
        self.epochs = EpochWatcher(engine, own)
        self.requests = Counter(
            "convlab_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "convlab_http_request_duration_seconds",
            "Seconds from request to the end of the response.",
            ["method", "route"],
            registry=own,
        )

    def exposition(self, *, per_user: bool) -> bytes:
        """The text exposition, with the per-user figures or without."""
        shown = generate_latest(self.registry)
        return shown + generate_latest(self.per_user) if per_user else shown


class RequestMetrics:
    """Counts and times every HTTP request under its route template (never the raw path, so
    ids do not become labels)."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recorded(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recorded)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
