"""This machine's Docker engine and the images built without a registry, for the tests that
start containers (scripts/docker-engine.sh, scripts/docker-images.sh)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "convlab-base:latest"
"""Debian bookworm from Debian's packages: Python 3.11, the host's CA bundle."""


def _unavailable(reason: str) -> None:
    """No engine: a failure under CI=true, a loud skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def engine_with_images() -> None:
    """A running engine, with the base and stand-in images built (once: cached by content)."""
    for script in ("docker-engine.sh", "docker-images.sh"):
        result = subprocess.run(
            [str(ROOT / "scripts" / script)], capture_output=True, text=True, timeout=900
        )
        if result.returncode != 0:
            _unavailable(f"scripts/{script} failed, so containers are NOT tested:\n{result.stderr}")
