"""docker-compose.yml really started on this machine's Docker engine, with the CPU override.

The images that cannot be pulled here are built from Debian's packages (scripts/docker-images.sh,
cached by content), convlab's own image with ``up --build`` (cached by Docker's layers). One
stack serves the whole module: a token made in the api container, a digits run through the
published port, the worker restarted mid-run, and the stack taken down and brought up again.
"""

import io
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_digits

from tests.docker_engine import engine_with_images
from tests.services import free_port, wait_for, wait_for_status

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
FILES = ("docker-compose.yml", "docker-compose.cpu.yml", "tests/compose/docker-compose.test.yml")
SERVICES = ("postgres", "redis", "api", "worker")
API_UID = 10001
"""The convlab user in the image, who writes uploads into the data folder."""


@dataclass
class ComposeStack:
    """One compose project on this machine's engine, driven by Debian's docker-compose."""

    project: str
    env_file: Path
    port: int
    data: Path
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "--env-file", str(self.env_file), "-p", self.project]
        for name in FILES:
            command += ["-f", name]
        # The shell's COMPOSE_* and convlab's variables must not leak into the project.
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("COMPOSE_", "CONVLAB_", "POSTGRES_", "REDIS_"))
        }
        return subprocess.run(
            [*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )

    def must(self, *args: str, timeout: float = 600) -> str:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, f"docker-compose {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def health(self) -> dict[str, str]:
        """Each running service's health, as Docker's healthchecks report it."""
        states = {}
        for service in SERVICES:
            containers = self.must("ps", "-q", service).split()
            inspected = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Health.Status}}", *containers],
                capture_output=True,
                text=True,
            )
            states[service] = " ".join(inspected.stdout.split()) or inspected.stderr.strip()
        return states

    def wait_healthy(self, timeout: float = 240) -> None:
        wait_for(
            lambda: set(" ".join(self.health().values()).split()) == {"healthy"},
            timeout=timeout,
            what=f"every service healthy ({self.health()})",
            every=2,
        )

    def up(self, step: str) -> None:
        started = time.monotonic()
        self.must("up", "-d", "--build")
        self.wait_healthy()
        self.timings[step] = time.monotonic() - started

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "60").stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    """The stack built and up, every service healthy; taken down with its volumes at the end."""
    started = time.monotonic()
    engine_with_images()
    images = time.monotonic() - started
    folder = tmp_path_factory.mktemp("compose")
    data = folder / "data"
    (data / "uploads").mkdir(parents=True)
    for path in (data, data / "uploads"):
        os.chown(path, API_UID, API_UID)
    port = free_port()
    env_file = folder / ".env"
    env_file.write_text(
        "POSTGRES_PASSWORD=pg-compose-test\nREDIS_PASSWORD=redis-compose-test\n"
        f"CONVLAB_PORT={port}\nCONVLAB_DATA_DIR_HOST={data}\n"
    )
    stack = ComposeStack(f"convlabtest{os.getpid()}", env_file, port, data, {"base images": images})
    try:
        started = time.monotonic()
        stack.must("build")
        stack.timings["convlab image"] = time.monotonic() - started
        stack.up("up to healthy")
        yield stack
    finally:
        print(stack.logs())
        stack.run("down", "-v", "--timeout", "10")
        print(", ".join(f"{name} {seconds:.0f} s" for name, seconds in stack.timings.items()))


@pytest.fixture(scope="module")
def token(stack: ComposeStack) -> str:
    """An admin's token, made as the README tells a lab admin to, in the api container."""
    created = stack.must("exec", "-T", "api", "convlab", "token", "create", "--user", "lab-admin")
    return created.strip().splitlines()[-1]


def _submit(client: httpx.Client, epochs: int) -> str:
    spec = {"preset": "base", "dataset": {"name": "digits"}, "training": {"epochs": epochs}}
    response = client.post("/experiments", json=spec)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _epochs(client: httpx.Client, experiment_id: str) -> list[int]:
    history = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
    return [row["epoch"] for row in history]


def test_image_runs_as_its_own_user_with_convlab_on_path(stack: ComposeStack) -> None:
    whoami = stack.must("exec", "-T", "worker", "sh", "-c", "id -u; command -v convlab")
    assert whoami.split() == [str(API_UID), "/opt/venv/bin/convlab"]


def test_token_made_in_the_container_trains_a_digits_run(
    stack: ComposeStack, token: str, record_property: Callable[[str, object], None]
) -> None:
    with stack.client(token) as client:
        assert client.get("/experiments").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{stack.port}/experiments").status_code == 401
        started = time.monotonic()
        experiment_id = _submit(client, epochs=3)
        done = wait_for_status(client, experiment_id, {"succeeded", "failed"}, timeout=180)
        stack.timings["first run"] = time.monotonic() - started
        stack.timings["up to first result"] = (
            stack.timings["up to healthy"] + stack.timings["first run"]
        )
        assert done["status"] == "succeeded", stack.logs()
        assert _epochs(client, experiment_id) == [1, 2, 3]
    record_property("timings", stack.timings)


def _training(client: httpx.Client, epochs: int) -> str:
    """A run of ``epochs`` epochs submitted, once three of them are trained."""
    experiment_id = _submit(client, epochs=epochs)
    wait_for(
        lambda: len(_epochs(client, experiment_id)) >= 3,
        timeout=180,
        what="three epochs trained",
        every=0.5,
    )
    return experiment_id


def test_worker_restarted_mid_run_resumes_every_epoch_once(stack: ComposeStack, token: str) -> None:
    epochs = 40
    with stack.client(token) as client:
        experiment_id = _training(client, epochs)
        stack.must("restart", "worker")
        trained_before = len(_epochs(client, experiment_id))
        done = wait_for_status(client, experiment_id, {"succeeded", "failed"}, timeout=300)
        assert done["status"] == "succeeded", stack.logs()
        assert trained_before < epochs, "the run ended before the restart: nothing was resumed"
        assert _epochs(client, experiment_id) == list(range(1, epochs + 1))
        assert done["attempts"] == 2


def test_worker_killed_mid_run_resumes_after_its_lease(stack: ComposeStack, token: str) -> None:
    epochs = 40
    with stack.client(token) as client:
        experiment_id = _training(client, epochs)
        stack.must("kill", "-s", "SIGKILL", "worker")
        trained_before = len(_epochs(client, experiment_id))
        stack.must("start", "worker")
        done = wait_for_status(client, experiment_id, {"succeeded", "failed"}, timeout=300)
        assert done["status"] == "succeeded", stack.logs()
        assert trained_before < epochs, "the run ended before the kill: nothing was resumed"
        assert _epochs(client, experiment_id) == list(range(1, epochs + 1))


def test_runs_waiting_through_postgres_and_redis_restarts_all_succeed(
    stack: ComposeStack, token: str
) -> None:
    with stack.client(token) as client:
        runs = [_submit(client, epochs=3) for _ in range(3)]
        stack.must("restart", "postgres")
        stack.must("restart", "redis")
        done = [wait_for_status(client, run, {"succeeded", "failed"}, timeout=300) for run in runs]
        assert [run["status"] for run in done] == ["succeeded"] * 3, stack.logs()
        assert all(_epochs(client, run) == [1, 2, 3] for run in runs)


def _digits_npz() -> bytes:
    """A small upload: scikit-learn's digits as uint8 pictures, 120 to train on, 40 to test."""
    digits = load_digits()
    images = (digits.images * 15).astype(np.uint8)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=images[:120],
        y_train=digits.target[:120],
        x_test=images[120:160],
        y_test=digits.target[120:160],
    )
    return buffer.getvalue()


def test_upload_stored_by_the_api_trains_on_the_worker(stack: ComposeStack, token: str) -> None:
    with stack.client(token) as client:
        response = client.post(
            "/datasets", data={"name": "composed"}, files={"file": ("composed.npz", _digits_npz())}
        )
        assert response.status_code == 201, response.text
        spec = {"preset": "base", "dataset": {"name": "composed"}, "training": {"epochs": 2}}
        created = client.post("/experiments", json=spec)
        assert created.status_code == 201, created.text
        done = wait_for_status(client, created.json()["id"], {"succeeded", "failed"}, timeout=180)
        assert done["status"] == "succeeded", (done.get("error"), stack.logs())
    stored = [path for path in (stack.data / "uploads").rglob("*") if path.is_file()]
    assert stored and {path.stat().st_uid for path in stored} == {API_UID}


def test_two_workers_share_the_queue_and_train_each_run_once(
    stack: ComposeStack, token: str
) -> None:
    stack.must("up", "-d", "--scale", "worker=2")
    stack.wait_healthy()
    with stack.client(token) as client:
        runs = [_submit(client, epochs=5) for _ in range(3)]
        done = [wait_for_status(client, run, {"succeeded", "failed"}, timeout=300) for run in runs]
        assert [run["status"] for run in done] == ["succeeded"] * 3, stack.logs()
        assert all(_epochs(client, run) == [1, 2, 3, 4, 5] for run in runs)
        assert [run["attempts"] for run in done] == [1, 1, 1]
        assert len({run["attempt_log"][0]["worker"] for run in done}) == 2


def _requests_to_presets(stack: ComposeStack, token: str) -> float:
    """The API's count of answered GET /presets, scraped on a new connection (any of its
    processes answers)."""
    scraped = httpx.get(
        f"http://127.0.0.1:{stack.port}/metrics",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    route = {"method": "GET", "route": "/presets", "status": "200"}
    for family in text_string_to_metric_families(scraped.text):
        for sample in family.samples:
            if sample.name == "convlab_http_requests_total" and sample.labels == route:
                return float(sample.value)
    return 0.0


def test_the_api_answers_with_four_processes_and_metrics_sum_them(
    stack: ComposeStack, token: str
) -> None:
    listed = stack.must("exec", "-T", "api", "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert listed.count("multiprocessing.spawn") == 4, listed  # uvicorn --workers 4
    before = _requests_to_presets(stack, token)
    for _ in range(40):  # each on a connection of its own: the processes share them
        answer = httpx.get(
            f"http://127.0.0.1:{stack.port}/presets",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 200
    for _ in range(8):  # whichever process answers the scrape, the sum of all four
        assert _requests_to_presets(stack, token) == before + 40


def test_down_then_up_keeps_runs_and_tokens(stack: ComposeStack, token: str) -> None:
    with stack.client(token) as client:
        before = {row["id"]: row["status"] for row in client.get("/experiments").json()["items"]}
        histories = {key: _epochs(client, key) for key in before}
    assert before and set(before.values()) == {"succeeded"}
    stack.must("down", "--timeout", "30")
    stack.up("down, then up to healthy")
    with stack.client(token) as client:
        listed = client.get("/experiments")
        assert listed.status_code == 200, f"the token did not survive: {listed.text}"
        after = {row["id"]: row["status"] for row in listed.json()["items"]}
        assert after == before
        assert {key: _epochs(client, key) for key in after} == histories


def test_down_with_volumes_removes_runs_and_tokens(stack: ComposeStack, token: str) -> None:
    stack.must("down", "-v", "--timeout", "30")
    stack.up("down -v, then up to healthy")
    with stack.client(token) as client:
        assert client.get("/experiments").status_code == 401  # the token went with the database
    fresh = stack.must("exec", "-T", "api", "convlab", "token", "create", "--user", "lab-admin")
    with stack.client(fresh.strip().splitlines()[-1]) as client:
        assert client.get("/experiments").json()["items"] == []
