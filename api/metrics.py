"""Prometheus metrics for ``GET /metrics``: experiments by status and the queue, read from the
database at each scrape; epochs completed and their durations, from the rows workers write
(the workers' metrics reach Prometheus through the database); and the API's own requests."""

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from store.db import session_scope
from store.handles import Engine
from store.monitoring import epochs_recorded_after, experiments_by_status
from store.tables import Status, utcnow

EPOCH_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
LATE_COMMIT = timedelta(seconds=120)
"""How far back each scrape looks again for epoch rows committed after a later-stamped one."""


class ExperimentsCollector(Collector):
    """Experiments by status and the queue depth, counted at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.engine) as session:
            counts = experiments_by_status(session)
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


class EpochWatcher:
    """Counts the epochs workers finish and observes their durations, once per epoch row.

    Rows are read from the database at each scrape, so any worker on any machine counts; a
    row is counted once even when a later scrape reads it again."""

    def __init__(self, engine: Engine, registry: CollectorRegistry) -> None:
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

    def observe_new(self) -> None:
        with self.lock:
            self._observe_new()

    def _observe_new(self) -> None:
        with session_scope(self.engine) as session:
            rows = epochs_recorded_after(session, after=self.since - LATE_COMMIT)
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
    """The registry ``/metrics`` serves, with this process's instruments."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ExperimentsCollector(engine))
        self.epochs = EpochWatcher(engine, self.registry)
        self.requests = Counter(
            "convlab_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "convlab_http_request_duration_seconds",
            "Seconds from request to the end of the response.",
            ["method", "route"],
            registry=self.registry,
        )


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
