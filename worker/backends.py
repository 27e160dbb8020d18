"""The Keras 3 backend a worker trains on (``CONVLAB_KERAS_BACKEND``: tensorflow, jax or torch),
and what differs between them: process-wide set-up, the accelerator in use, op determinism and
how running out of memory shows. Keras reads ``KERAS_BACKEND`` when it is first imported, so
``choose`` runs before anything imports Keras (``worker.celery_app`` calls it on import); only
the chosen backend's library is ever imported. At first this module imports nothing else, so
bench/backends.py runs it on a box that holds little more than Keras."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from importlib import metadata
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import Settings

BACKENDS = ("tensorflow", "jax", "torch")
"""The backends a worker can train on; the value of ``CONVLAB_KERAS_BACKEND``."""

DISTRIBUTIONS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
"""Each backend's distribution, whose version is recorded with each attempt."""

MIXED_POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


class NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Keeps TensorFlow out of a process training on another backend: where it is installed,
    Keras would load it (some seconds, a GB) to check types on save. Its modules are found,
    with no file (as PyTorch's compiler looks them up), but fail to load."""

    def find_spec(self, name: str, path: object, target: object = None) -> ModuleSpec | None:
        if name.partition(".")[0] != "tensorflow":
            return None
        return ModuleSpec(name, self)

    def exec_module(self, module: ModuleType) -> None:
        raise ModuleNotFoundError(
            f"this worker trains on {os.environ['KERAS_BACKEND']}", name=module.__name__
        )


def refusal(name: str) -> str | None:
    """Why a worker must not start on backend ``name``, or None."""
    if name not in BACKENDS:
        return (
            f"CONVLAB_KERAS_BACKEND is {name!r}, which is not a Keras backend convlab trains on: "
            f"set it to one of {', '.join(BACKENDS)} (or leave it unset for tensorflow), so it "
            "does not start."
        )
    if importlib.util.find_spec(name) is None:
        return (
            f"CONVLAB_KERAS_BACKEND is {name} but {name} is not installed in this Python "
            f"({sys.executable}): install it, or choose a backend that is, so it does not start."
        )
    loaded = sys.modules.get("keras")
    if loaded is not None and loaded.backend.backend() != name:
        return (
            f"CONVLAB_KERAS_BACKEND is {name} but Keras was already loaded on "
            f"{loaded.backend.backend()} in this process, so it does not start."
        )
    return None


def choose(name: str) -> None:
    """Make ``name`` the backend Keras loads in this process and the ones it forks (an
    unknown name changes nothing: the worker refuses it at start)."""
    if name not in BACKENDS:
        return
    os.environ["KERAS_BACKEND"] = name
    if name != "tensorflow" and not any(isinstance(f, NoTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, NoTensorFlow())
    if name == "jax":  # take GPU memory as needed, as TensorFlow's memory growth does
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def backend() -> str:
    """The backend this process's Keras runs on."""
    import keras

    return str(keras.backend.backend())


def version(name: str) -> str | None:
    """The installed version of backend ``name``'s library, None if it is not installed."""
    try:
        return metadata.version(DISTRIBUTIONS[name])
    except metadata.PackageNotFoundError:
        return None


def configure(settings: Settings, cores: int, memory_mb: int | None = None) -> None:
    """Process-wide choices, made before the backend runs its first op: GPU memory capped at
    ``memory_mb`` (a slot's share, ``worker.slots``; None: taken as needed), ``cores`` threads
    for the ops on a CPU, and the mixed-precision policy."""
    import keras

    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            if memory_mb is None:
                tf.config.experimental.set_memory_growth(gpu, True)  # share nothing unused
            else:
                limit = [tf.config.LogicalDeviceConfiguration(memory_limit=memory_mb)]
                tf.config.set_logical_device_configuration(gpu, limit)
        tf.config.threading.set_intra_op_parallelism_threads(cores)
    elif name == "torch":
        import torch

        torch.set_num_threads(cores)
        if memory_mb is not None and torch.cuda.is_available():
            total_mb = torch.cuda.get_device_properties(0).total_memory // 2**20
            torch.cuda.set_per_process_memory_fraction(min(memory_mb / total_mb, 1.0))
    if settings.mixed_precision in MIXED_POLICIES:
        keras.mixed_precision.set_global_policy(MIXED_POLICIES[settings.mixed_precision])


def compile_steps(model: Any) -> None:
    """On JAX, ``model``'s steps compiled with XLA whatever its spec or checkpoint says: JAX
    runs an uncompiled step op by op, ten times slower than TensorFlow on digits."""
    if backend() == "jax":
        model.jit_compile = True


def on_gpu() -> bool:
    """Whether this process's backend computes on a GPU."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if name == "jax":
        import jax

        return jax.default_backend() == "gpu"
    import torch

    return bool(torch.cuda.is_available())


def determinism(on: bool) -> None:
    """Deterministic ops on or off for what this process runs next. TensorFlow: its op
    determinism (no public way back, so its own ``disable_op_determinism``); PyTorch: its
    deterministic algorithms; JAX: XLA is deterministic on a CPU, and on a GPU as far as its
    ``--xla_gpu_deterministic_ops`` flag (set in ``XLA_FLAGS`` before the worker starts) says."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf
        from tensorflow.python.framework import config as tf_config

        if on:
            tf.config.experimental.enable_op_determinism()
        else:
            tf_config.disable_op_determinism()
    elif name == "torch":
        import torch

        torch.use_deterministic_algorithms(on, warn_only=True)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the backend saying the accelerator (or host) ran out of memory:
    TensorFlow's ResourceExhaustedError, XLA's RESOURCE_EXHAUSTED, torch's OutOfMemoryError."""
    return type(exc).__name__ in {"ResourceExhaustedError", "OutOfMemoryError"} or (
        "RESOURCE_EXHAUSTED" in str(exc)
    )


def cuda_versions() -> tuple[str | None, str | None]:
    """The CUDA and cuDNN versions the backend was built with (None: a CPU build, or a backend
    that does not say)."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        return _text(build.get("cuda_version")), _text(build.get("cudnn_version"))
    if name == "torch":
        import torch

        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return _text(torch.version.cuda), _text(cudnn)
    return None, None


def _text(value: object) -> str | None:
    return None if value is None else str(value)
