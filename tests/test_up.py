"""`make up`'s process pair: Ctrl-C or SIGTERM stops both; a job in progress goes back to the
queue and runs again on the next start."""

import os
import re
import shutil
import signal
import socket
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


BANNER = "convlab: API on http://127.0.0.1:"
LONG_JOB = {"dataset": {"name": "digits"}, "training": {"epochs": 300, "batch_size": 8}}
"""A run still training when the tests stop it."""


def _start(home: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """scripts/up.sh on ``port`` in its own process group, as a terminal runs it; its output
    goes to ``home``/up.log."""
    env = {
        **env,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CONVLAB_HOME": str(home),
        "CONVLAB_PORT": str(port),
    }
    with (home / "up.log").open("ab") as log:
        return subprocess.Popen(
            [str(ROOT / "scripts" / "up.sh")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextmanager
def up(
    home: Path, tf_log_level: str | None = "2", **settings: str
) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    """scripts/up.sh and a client for it, once its banner says the API is up (which it
    must be by then); ``tf_log_level``: TF_CPP_MIN_LOG_LEVEL (None: up.sh's choice)."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env |= {f"CONVLAB_{key.upper()}": value for key, value in settings.items()}
    process = _start(
        home, port, env | ({"TF_CPP_MIN_LOG_LEVEL": tf_log_level} if tf_log_level else {})
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, limits=CONNECTION_LIMITS)
    log = home / "up.log"
    begin = log.stat().st_size if log.exists() else 0
    try:
        wait_for(
            lambda: BANNER in log.read_text()[begin:] or process.poll() is not None,
            timeout=60,
            what="up.sh's banner",
        )
        assert _healthy(client), log.read_text()[begin:]  # the banner comes after the bind
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
    # A stop takes about 5 s here; CI once saw one past the default 30 s grace (cause unknown):
    # a longer grace tells a slow stop from a hung one, whose stacks the log then shows.
    with up(tmp_path, stop_grace_s="90") as (process, client):
        experiment_id = client.post("/experiments", json=LONG_JOB).json()["id"]
        wait_for(
            lambda: client.get(f"/experiments/{experiment_id}").json()["epochs_done"] >= 1,
            timeout=120,
            what="the first epoch",
        )
        # An open event stream (a dashboard tab) must not hold the API up.
        with client.stream("GET", f"/experiments/{experiment_id}/events") as stream:
            assert stream.status_code == 200
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
            assert _exit_status(process, tmp_path, timeout=120) == 0
        wait_for(lambda: not _group_alive(process.pid), timeout=10, what="every process to exit")
    stopped = (tmp_path / "up.log").read_text()
    tail = stopped[-8000:]  # what a failure shows: pytest would cut the log's middle out
    assert "interrupted by shutdown; its weights kept" in stopped, tail
    assert "Traceback" not in stopped, tail
    assert "timeout graceful shutdown exceeded" not in stopped, tail  # the stream ended

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


def test_a_worker_past_its_grace_prints_its_stacks_and_is_killed(tmp_path: Path) -> None:
    with up(tmp_path, stop_grace_s="0") as (process, client):
        experiment_id = client.post("/experiments", json=LONG_JOB).json()["id"]
        wait_for_status(client, experiment_id, {"running"}, timeout=120)
        os.killpg(process.pid, signal.SIGINT)
        assert _exit_status(process, tmp_path) == 0
        wait_for(lambda: not _group_alive(process.pid), timeout=10, what="every process to exit")
    said = (tmp_path / "up.log").read_text()
    assert "the worker did not stop within 0 s; its threads' stacks follow" in said, said[-8000:]
    # faulthandler's dumps: the worker's main process and its training process
    for where in (
        r"celery/worker/worker\.py\", line \d+ in start",
        r"worker/training\.py\", line \d+ in run_experiment",
    ):
        assert re.search(where, said), said[-8000:]


def test_a_taken_port_is_one_sentence_naming_it_and_how_to_choose_another(
    tmp_path: Path,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = _start(tmp_path, port, dict(os.environ))
        assert _exit_status(process, tmp_path) == 1
    said = (tmp_path / "up.log").read_text()
    assert said == (
        f"convlab: port {port} on 127.0.0.1 is taken by another program (another convlab?); "
        f"stop it, or choose another port: CONVLAB_PORT={port + 1} make up\n"
    )


@pytest.mark.skipif(
    Path("/dev/nvidiactl").exists(), reason="with an NVIDIA driver, TensorFlow's errors are shown"
)
def test_a_run_on_a_cpu_machine_prints_no_cuda_errors(tmp_path: Path) -> None:
    """Without an NVIDIA driver, TensorFlow's failed CUDA probe is not shown."""
    job = {"dataset": {"name": "digits"}, "training": {"epochs": 1}}
    with up(tmp_path, tf_log_level=None) as (process, client):
        experiment_id = client.post("/experiments", json=job).json()["id"]
        done = wait_for_status(client, experiment_id, {"succeeded", "failed"}, timeout=120)
        assert done["status"] == "succeeded"
        os.killpg(process.pid, signal.SIGINT)
        assert _exit_status(process, tmp_path) == 0
    said = (tmp_path / "up.log").read_text()
    assert "cuInit" not in said and "E0000" not in said, said


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


def _checkout(into: Path) -> Path:
    """This checkout's tracked files, less tests, docs and benchmarks, copied into ``into``."""
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in listed:
        if not name.startswith(("tests/", "docs/", "bench/")):
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, into / name)
    return into


def _installs(checkout: Path, target: str) -> list[str]:
    """The pip installs `make TARGET` would run in a checkout without a .venv."""
    planned = subprocess.run(
        ["make", "-n", target], cwd=checkout, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return [
        line
        for line in planned
        if line.startswith(".venv/bin/pip install") and "--upgrade pip" not in line
    ]


def test_make_up_installs_the_server_without_the_test_extras(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)
    assert _installs(checkout, "up") == [".venv/bin/pip install --quiet -e ./client -e '.'"]
    for target in ("install", "test", "lint"):
        assert "-e '.[test]'" in _installs(checkout, target)[0], target


def test_editable_installs_print_no_setuptools_warning(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path / "checkout")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    pip = (Path(sys.executable).parent / "pip", "--python", python, "install", "--no-deps")
    installed = subprocess.run(
        [*pip, "-e", checkout / "client", "-e", checkout],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    said = installed.stdout + installed.stderr
    assert "Warning" not in said and "!!" not in said, said
    found = subprocess.run(
        [python, "-c", "import importlib.util as u; print(u.find_spec('api').origin)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip() == str(checkout / "api" / "__init__.py")
