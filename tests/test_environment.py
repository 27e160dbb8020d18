"""What a training process records of itself with each attempt (``worker.environment``), and
TensorFlow's op determinism, on for a deterministic run and off for the next run in the same
process. The attempt log's environment as the API serves it: tests/test_verify.py."""

import platform
import subprocess
from pathlib import Path

import keras
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from tests.services import ROOT
from worker.environment import commit_of, environment
from worker.heartbeat import accelerator
from worker.training import reset_seed


def _git(folder: Path, *args: str) -> str:
    identity = ("-c", "user.name=test", "-c", "user.email=test@example.invalid")
    done = subprocess.run(
        ["git", *identity, "-C", str(folder), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_environment_names_this_process_versions_and_accelerator() -> None:
    found = environment()
    assert found["python"] == platform.python_version()
    assert found["tensorflow"] == tf.__version__
    assert found["keras"] == keras.__version__
    assert found["cuda"] == tf.sysconfig.get_build_info().get("cuda_version")
    assert found["gpu"] == accelerator().name
    assert (found["driver"] is None) == (found["gpu"] == "cpu")
    assert found["commit"] == commit_of(ROOT)


def test_commit_of_is_the_head_of_a_checkouts_top_only(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "inside").mkdir(parents=True)
    _git(checkout, "init", "-q")
    _git(checkout, "commit", "-q", "--allow-empty", "-m", "first")
    assert commit_of(checkout) == _git(checkout, "rev-parse", "HEAD")
    assert commit_of(checkout / "inside") is None  # e.g. a venv's site-packages in a checkout
    assert commit_of(tmp_path) is None


def test_commit_of_without_git_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert commit_of(ROOT) is None


def test_reset_seed_turns_op_determinism_on_for_a_deterministic_run_only() -> None:
    try:
        reset_seed(0, deterministic=True)
        assert tf_config.is_op_determinism_enabled()
        reset_seed(0)  # the next run in the same warm process
        assert not tf_config.is_op_determinism_enabled()
    finally:
        tf_config.disable_op_determinism()
