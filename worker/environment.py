"""What a training process runs with, recorded with each attempt it claims: Python,
TensorFlow, Keras, the CUDA and cuDNN versions TensorFlow was built with, the GPU and its
driver (NVML, as ``worker.heartbeat`` reads it) or "cpu", and convlab's version and commit;
and the switch for TensorFlow's op determinism, which a deterministic run turns on."""

import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

import keras
import pynvml
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from worker.heartbeat import accelerator

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
"""The folder holding convlab's packages: a git checkout's top when installed from one."""


@cache
def environment() -> dict[str, str | None]:
    """This process's environment, read once (None: not known, e.g. no CUDA in a CPU build)."""
    build = tf.sysconfig.get_build_info()
    gpu = accelerator().name
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cuda": _text(build.get("cuda_version")),
        "cudnn": _text(build.get("cudnn_version")),
        "gpu": gpu,
        "driver": None if gpu == "cpu" else _driver(),
        "convlab": _version(),
        "commit": commit_of(PACKAGE_ROOT),
    }


def determinism(on: bool) -> None:
    """TensorFlow's op determinism on or off for what this process runs next: TensorFlow
    offers no public way back, so its own ``disable_op_determinism`` switches it off."""
    if on:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def commit_of(folder: Path) -> str | None:
    """The commit checked out in ``folder`` if it is the top of a git work tree, else None
    (an installed copy, no git, or a folder inside some other repository)."""
    try:
        found = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    top, _, head = found.stdout.strip().partition("\n")
    return head.strip() if Path(top).resolve() == folder.resolve() else None


def _version() -> str | None:
    try:
        return metadata.version("convlab")
    except metadata.PackageNotFoundError:
        return None


def _driver() -> str | None:
    """NVIDIA's driver version, as NVML reports it."""
    try:
        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return None
    return version if isinstance(version, str) else version.decode()


def _text(value: object) -> str | None:
    return None if value is None else str(value)
