"""Prometheus metrics in process: what /metrics counts, from the database and the requests."""

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from models.accelerator import Accelerator
from models.status import Status
from store.workers import beat
from tests.services import Trainer

RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 3}}


def _samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_experiments_by_status_and_the_queue(client: TestClient, trainer: Trainer) -> None:
    ids = [client.post("/experiments", json=RUN).json()["id"] for _ in range(3)]
    trainer.start(ids[0])
    trainer.finish(ids[0], Status.succeeded)
    trainer.start(ids[1])
    samples = _samples(client)
    assert _value(samples, "convlab_experiments", status="queued") == 1
    assert _value(samples, "convlab_experiments", status="running") == 1
    assert _value(samples, "convlab_experiments", status="succeeded") == 1
    assert _value(samples, "convlab_experiments", status="failed") == 0
    assert _value(samples, "convlab_queue_depth") == 1


def test_the_queue_by_priority_and_each_live_workers_gpu(
    client: TestClient, trainer: Trainer
) -> None:
    for priority in ("low", "high", "high"):
        client.post("/experiments", json={**RUN, "priority": priority})
    gpu, cpu = Accelerator("NVIDIA H200", 143771), Accelerator("cpu")
    beat(trainer.engine, "gpu-box/1/1", host="gpu-box", pid=1, accelerator=gpu, gpu_use=(37, 512))
    beat(trainer.engine, "cpu-box/2/2", host="cpu-box", pid=2, accelerator=cpu)
    samples = _samples(client)
    assert _value(samples, "convlab_queue_depth_by_priority", priority="high") == 2
    assert _value(samples, "convlab_queue_depth_by_priority", priority="low") == 1
    assert ("convlab_queue_depth_by_priority", frozenset({("priority", "normal")})) in samples
    labels = {"worker": "gpu-box/1/1", "host": "gpu-box", "accelerator": "NVIDIA H200"}
    assert _value(samples, "convlab_worker_gpu_utilization_percent", **labels) == 37
    assert _value(samples, "convlab_worker_gpu_memory_used_bytes", **labels) == 512 * 2**20
    no_gpu = [key for key in samples if ("worker", "cpu-box/2/2") in key[1]]
    assert no_gpu == []  # a worker without NVML reports no GPU readings


def test_each_finished_epoch_counts_once_with_its_duration(
    client: TestClient, trainer: Trainer
) -> None:
    experiment_id = client.post("/experiments", json=RUN).json()["id"]
    trainer.start(experiment_id)
    for epoch, seconds in [(1, 0.3), (2, 4.0)]:
        trainer.epoch(experiment_id, epoch, 1.0, 0.5, 1.0, 0.5, seconds)
    first = _samples(client)
    assert _value(first, "convlab_epochs_completed_total") == 2
    assert _value(first, "convlab_epoch_duration_seconds_count") == 2
    assert _value(first, "convlab_epoch_duration_seconds_sum") == 4.3
    assert _value(first, "convlab_epoch_duration_seconds_bucket", le="0.5") == 1
    trainer.epoch(experiment_id, 3, 1.0, 0.5, 1.0, 0.5, 0.2)
    again = _samples(client)
    assert _value(again, "convlab_epochs_completed_total") == 3
    assert _value(_samples(client), "convlab_epochs_completed_total") == 3


def test_requests_are_counted_under_their_route_template(client: TestClient) -> None:
    experiment_id = client.post("/experiments", json=RUN).json()["id"]
    client.get(f"/experiments/{experiment_id}")
    client.get("/experiments/nope")
    client.get("/no/such/path")
    samples = _samples(client)
    route = "/experiments/{experiment_id}"
    assert (
        _value(samples, "convlab_http_requests_total", method="GET", route=route, status="200") == 1
    )
    assert (
        _value(samples, "convlab_http_requests_total", method="GET", route=route, status="404") == 1
    )
    assert (
        _value(
            samples,
            "convlab_http_requests_total",
            method="POST",
            route="/experiments",
            status="201",
        )
        == 1
    )
    assert (
        _value(
            samples, "convlab_http_requests_total", method="GET", route="unmatched", status="404"
        )
        == 1
    )
    assert not any(experiment_id in str(labels) for _, labels in samples)
    assert (
        _value(samples, "convlab_http_request_duration_seconds_count", method="GET", route=route)
        == 2
    )
