"""What a training process runs with, recorded with each attempt it claims: Python, the Keras
backend and its version (``worker.backends``), Keras, the CUDA and cuDNN versions the backend
was built with, the GPU and its driver (NVML, as ``worker.heartbeat`` reads it) or "cpu", and
convlab's version and commit."""

import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

import keras
import pynvml

from worker.backends import BACKENDS, backend, cuda_versions, version
from worker.heartbeat import accelerator

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
"""The folder holding convlab's packages: a git checkout's top when installed from one."""


@cache
def environment() -> dict[str, str | None]:
    """This process's environment, read once (None: not known, e.g. no CUDA in a CPU build;
    the version of each backend that did not train: null)."""
    trained_on = backend()
    cuda, cudnn = cuda_versions()
    gpu = accelerator().name
    return {
        "python": platform.python_version(),
        "backend": trained_on,
        **{name: version(name) if name == trained_on else None for name in BACKENDS},
        "keras": keras.__version__,
        "cuda": cuda,
        "cudnn": cudnn,
        "gpu": gpu,
        "driver": None if gpu == "cpu" else _driver(),
        "convlab": _version(),
        "commit": commit_of(PACKAGE_ROOT),
    }


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
