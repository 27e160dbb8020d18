"""A newcomer's first result on a fresh Debian machine: a container of the Debian base image
(nothing but Python) gets `make`, `curl` and `git`, clones this repository and runs `make up`;
its API answers /health and trains a digits run. Prints the time from clone to each."""

import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.docker_engine import BASE_IMAGE, ROOT, engine_with_images
from tests.services import free_port, wait_for, wait_for_status

pytestmark = pytest.mark.slow

SETUP = (
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-"
    "recommends make curl git >/dev/null && git config --global --add safe.directory '*' && "
    "git clone -q /repo /home/newcomer/convlab && touch /cloned && cd /home/newcomer/convlab && "
    "exec make up"
)


@pytest.fixture
def fresh_machine() -> Iterator[tuple[str, int]]:
    """The container running ``make up`` on the host's network (to reach PyPI as this machine
    does), its name and port; removed afterwards. pip's cache is this machine's, so the wheels
    are downloaded once."""
    engine_with_images()
    name, port = f"convlab-fresh-{uuid.uuid4().hex[:8]}", free_port()
    subprocess.run(
        [
            "docker", "run", "-d", "--rm", "--name", name, "--network", "host",
            "-e", f"CONVLAB_PORT={port}",
            "-v", f"{ROOT}:/repo:ro",
            "-v", f"{pip_cache()}:/root/.cache/pip",
            BASE_IMAGE, "bash", "-c", SETUP,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    try:
        yield name, port
    finally:
        print(subprocess.run(["docker", "logs", "--tail", "40", name], capture_output=True).stderr)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def pip_cache() -> str:
    """This machine's pip cache folder."""
    found = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "pip"), "cache", "dir"], capture_output=True, text=True
    )
    return found.stdout.strip()


def test_make_up_on_a_fresh_debian_machine_answers_and_trains(
    fresh_machine: tuple[str, int],
) -> None:
    name, port = fresh_machine
    cloned = ["docker", "exec", name, "test", "-e", "/cloned"]
    wait_for(lambda: subprocess.run(cloned).returncode == 0, timeout=300, what="the clone")
    started = time.monotonic()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=900, what="make up's /health", every=2)
    answered = time.monotonic() - started
    with httpx.Client(base_url=url, timeout=30) as client:
        spec = {"dataset": {"name": "digits"}, "training": {"epochs": 3, "batch_size": 64}}
        created = client.post("/experiments", json=spec)
        assert created.status_code == 201, created.text
        done = wait_for_status(client, created.json()["id"], {"succeeded", "failed"}, timeout=300)
    assert done["status"] == "succeeded", done["error"]
    assert done["final"]["val_accuracy"] > 0.5
    print(f"from clone: /health after {answered:.0f} s, first result after "
          f"{time.monotonic() - started:.0f} s")  # fmt: skip
