"""The compose stack's monitoring profile, for real: Debian's Prometheus, run with the
repository's monitoring/prometheus.yml (targets and token path pointed at this machine),
scrapes a running API with auth on and sees what a real worker trained."""

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.services import (
    ROOT,
    Stack,
    free_port,
    missing,
    running_stack,
    stop_process,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("monitoring"), auth="true") as running:
        yield running


def _config_for(stack: Stack, token_file: Path) -> dict[str, Any]:
    """monitoring/prometheus.yml with the compose names swapped for this machine's."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "monitoring/prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["static_configs"] == [{"targets": ["api:8000"]}]
    assert job["authorization"]["credentials_file"] == "/etc/prometheus/convlab.token"
    job["static_configs"] = [{"targets": [stack.url.removeprefix("http://")]}]
    job["authorization"]["credentials_file"] = str(token_file)
    config["global"]["scrape_interval"] = "1s"
    return config


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        missing("Debian's prometheus (apt-get install prometheus)")
    folder = tmp_path_factory.mktemp("prometheus")
    token_file = folder / "convlab.token"
    token_file.write_text(stack.token("prometheus"))
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(_config_for(stack, token_file)))
    check = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def _query(prometheus: str, expression: str) -> float | None:
    try:
        response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression})
    except httpx.TransportError:
        return None  # not listening yet
    results = response.json()["data"]["result"] if response.status_code == 200 else []
    return float(results[0]["value"][1]) if results else None


def test_prometheus_scrapes_the_api_with_its_token_and_sees_a_workers_epochs(
    stack: Stack, prometheus: str
) -> None:
    with stack.client(stack.token("alice")) as alice:
        body = {"dataset": {"name": "digits"}, "training": {"epochs": 2}}
        experiment_id = alice.post("/experiments", json=body).json()["id"]
        finished = wait_for_status(alice, experiment_id, {"succeeded", "failed"}, timeout=120)
        assert finished["status"] == "succeeded", stack.log_tail()

    def scraped(expression: str, expected: float) -> bool:
        return _query(prometheus, expression) == expected

    wait_for(lambda: scraped('up{job="convlab"}', 1), timeout=60, what="a successful scrape")
    wait_for(lambda: scraped("convlab_epochs_completed_total", 2), timeout=30, what="2 epochs")
    # The scrape that saw both epochs may have been taken before the run's end was recorded.
    succeeded = 'convlab_experiments{status="succeeded"}'
    wait_for(lambda: scraped(succeeded, 1), timeout=30, what="a scrape after the run ended")
    assert _query(prometheus, "convlab_epoch_duration_seconds_count") == 2
    assert _query(prometheus, "convlab_queue_depth") == 0
