"""The client installs alone: ``pip install ./client`` into a fresh venv gives a ``convlab`` that
submits to a real server, without TensorFlow or any package of the server."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import BIN, ROOT, running_stack

pytestmark = pytest.mark.slow

ENV = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
"""This environment, less anything that would put the server's packages on the path."""
PACKAGES = (
    "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: "
    "sorted({f.parts[0] for f in d.files or [] if f.suffix == '.py'}) for d in m.distributions()}))"
)
"""Prints each installed distribution's name and the top-level packages it puts on the path."""


def run(*args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env={**ENV, **env}, capture_output=True, text=True, timeout=180)


def test_the_client_installs_alone_and_submits_to_a_server(tmp_path: Path) -> None:
    source = tmp_path / "client"  # a copy: a build writes into its source folder
    shutil.copytree(ROOT / "client", source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python, convlab = venv / "bin" / "python", venv / "bin" / "convlab"
    install = subprocess.Popen(  # while the stack starts; this venv's pip installs into it
        [BIN / "pip", "--python", python, "install", "--quiet", source],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with running_stack(tmp_path / "home") as stack:
        output, _ = install.communicate(timeout=300)
        assert install.returncode == 0, output

        usage = run(convlab, "--help")
        assert usage.returncode == 0, usage.stderr
        assert "submit" in usage.stdout and "study" in usage.stdout
        assert "token" not in usage.stdout  # the server's command comes with the server

        digits = ("--set", "dataset.name=digits", "--set", "training.epochs=1", "--follow")
        submitted = run(convlab, "submit", "--preset", "dropout", *digits, CONVLAB_URL=stack.url)
        assert submitted.returncode == 0, submitted.stderr
        with stack.client() as api:
            experiment = api.get(f"/experiments/{submitted.stdout.split()[0]}").json()
        assert experiment["status"] == "succeeded" and experiment["spec"]["preset"] == "dropout"

    isolated = (python, "-I", "-c")  # not this checkout's folder (its egg-info) on the path
    assert "No module named 'tensorflow'" in run(*isolated, "import tensorflow").stderr
    packages = json.loads(run(*isolated, PACKAGES).stdout)
    assert packages["convlab-client"] == ["convlab_client"]  # no api, core, models, worker
    assert not {"convlab", "tensorflow", "keras", "fastapi", "sqlmodel"} & packages.keys()
