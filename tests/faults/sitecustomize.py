"""Bugs planted in a worker for black-box tests: with this folder on PYTHONPATH, the
``CONVLAB_TEST_FAULT`` named below makes ``models.build`` misbehave in the training process.

- ``rate_dropped``: the optimizer is built at its default learning rate, whatever the spec says
  (the bug a search once had, when a dotted key order dropped the rate).
- ``build_crashes``: building the model raises a RuntimeError.
"""

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any

FAULT = os.environ.get("CONVLAB_TEST_FAULT")


def _plant(build: ModuleType) -> None:
    if FAULT == "rate_dropped":
        original = build.build_optimizer

        def at_default_rate(spec: Any) -> Any:
            default = type(spec).model_fields["learning_rate"].default
            return original(spec.model_copy(update={"learning_rate": default}))

        build.build_optimizer = at_default_rate
    elif FAULT == "build_crashes":

        def crash(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("planted fault: the builder crashed")

        build.build_model = crash


class _Planter(importlib.abc.MetaPathFinder):
    """Finds ``models.build`` as usual, and plants the fault right after it runs."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "models.build":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            _plant(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if FAULT:
    sys.meta_path.insert(0, _Planter())
