"""`make up`'s process pair: Ctrl-C or SIGTERM stops both; a job in progress goes back to the
queue and runs again on the next start."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from convlab_client.client import CONNECTION_LIMITS
from tests.pictures import blank_png
from tests.services import ROOT, free_port, wait_for, wait_for_status

pytestmark = pytest.mark.slow


@contextmanager
def up(home: Path, **settings: str) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    """scripts/up.sh in its own process group, as a terminal runs it, and a client for it."""
    port = free_port()
    env = {
        **os.environ,
        **{f"CONVLAB_{key.upper()}": value for key, value in settings.items()},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CONVLAB_HOME": str(home),
        "CONVLAB_PORT": str(port),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with (home / "up.log").open("ab") as log:
        process = subprocess.Popen(
            [str(ROOT / "scripts" / "up.sh")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, limits=CONNECTION_LIMITS)
    try:
        wait_for(lambda: _healthy(client), timeout=60, what="up.sh's API")
        yield process, client
    finally:
        client.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def _exit_status(process: subprocess.Popen[bytes], home: Path, timeout: float = 60) -> int:
    """up.sh's exit status once it has stopped; a failure that names what still runs."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"up.sh still runs {timeout:.0f} s after the signal; its processes:\n"
            f"{_group_processes(process.pid)}\n--- up.log (tail)\n"
            f"{(home / 'up.log').read_text(errors='replace')[-6000:]}"
        )


def _group_processes(pgid: int) -> str:
    """Each process of the group: pid, state, what it waits in, its command line."""
    lines = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            proc = stat.parent
            wchan = (proc / "wchan").read_text()
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        lines.append(f"{proc.name} {fields[0]} {wchan} {command[:160]}")
    return "\n".join(lines)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_stops_both_and_requeues_the_job_in_progress(tmp_path: Path) -> None:
    long_job = {"dataset": {"name": "digits"}, "training": {"epochs": 300, "batch_size": 8}}
    with up(tmp_path) as (process, client):
        experiment_id = client.post("/experiments", json=long_job).json()["id"]
        wait_for(
            lambda: client.get(f"/experiments/{experiment_id}").json()["epochs_done"] >= 1,
            timeout=120,
            what="the first epoch",
        )
        # An open event stream (a dashboard tab) must not hold the API up.
        with client.stream("GET", f"/experiments/{experiment_id}/events") as stream:
            assert stream.status_code == 200
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
            assert _exit_status(process, tmp_path) == 0
        wait_for(lambda: not _group_alive(process.pid), timeout=10, what="every process to exit")
    stopped = (tmp_path / "up.log").read_text()
    assert "interrupted by shutdown; its weights kept" in stopped
    assert "Traceback" not in stopped
    assert "timeout graceful shutdown exceeded" not in stopped  # the stream ended, not cancelled

    with up(tmp_path) as (process, client):
        requeued = client.get(f"/experiments/{experiment_id}").json()
        assert requeued["status"] in {"queued", "running"}
        assert requeued["error"] is None
        running = wait_for_status(client, experiment_id, {"running"}, timeout=60)
        assert running["attempts"] == 2
        assert client.post(f"/experiments/{experiment_id}/cancel").status_code == 202
        wait_for_status(client, experiment_id, {"cancelled"}, timeout=30)
        process.send_signal(signal.SIGTERM)  # `kill` of the script alone
        assert _exit_status(process, tmp_path) == 0
        wait_for(lambda: not _group_alive(process.pid), timeout=10, what="every process to exit")


def test_a_dead_worker_is_started_again_and_its_job_resumes(tmp_path: Path) -> None:
    job = {"dataset": {"name": "digits"}, "training": {"epochs": 12, "batch_size": 16}}
    with up(tmp_path, lease_seconds="3", sweep_interval_s="0.5") as (process, client):
        experiment_id = client.post("/experiments", json=job).json()["id"]

        def two_epochs_done() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(f"/experiments/{experiment_id}").json()
            return body if body["epochs_done"] >= 2 else None

        running = wait_for(two_epochs_done, timeout=120, what="two epochs")
        trainer = int(running["worker"].split("/")[1])
        celery_main = int(Path(f"/proc/{trainer}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(celery_main, signal.SIGKILL)
        done = wait_for_status(client, experiment_id, {"succeeded", "failed"}, timeout=120)
        assert done["status"] == "succeeded"
        assert done["workers_lost"] == 1
        epochs = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
        assert [row["epoch"] for row in epochs] == list(range(1, 13))
        assert "the worker exited" in (tmp_path / "up.log").read_text()
        # A prediction starts the API's prediction process, which Ctrl-C reaches too.
        picture = {"file": ("blank.png", blank_png(8, 8), "image/png")}
        predicted = client.post(f"/experiments/{experiment_id}/predict", files=picture, timeout=120)
        assert predicted.status_code == 200, predicted.text
        os.killpg(process.pid, signal.SIGINT)
        assert _exit_status(process, tmp_path) == 0
    assert "Traceback" not in (tmp_path / "up.log").read_text()
