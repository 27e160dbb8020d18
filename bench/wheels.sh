#!/usr/bin/env bash
# The wheels bench/gpu-backends.sh installs on a GPU box that has JAX or PyTorch (and NumPy)
# but no network and no TensorFlow: Keras and its dependencies, and what models.build and
# models.presets import besides (pydantic, Pillow), at the versions this .venv holds, for
# Linux x86-64 and the box's Python (PY_VERSION, default 3.11), into bench/wheels/ (not
# committed). Run it here, where there is a network, and carry the folder with the project.
#
#   bench/wheels.sh                  # then: du -sh bench/wheels
#   PY_VERSION=3.12 bench/wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
PY_VERSION=${PY_VERSION:-3.11}
PACKAGES=(keras absl-py namex rich markdown-it-py mdurl pygments packaging optree h5py
    ml-dtypes pydantic pydantic-core typing-extensions annotated-types typing-inspection pillow)
pinned=()
for package in "${PACKAGES[@]}"; do
    pinned+=("$package==$("$PYTHON" -c "from importlib.metadata import version; print(version('$package'))")")
done
mkdir -p bench/wheels
"$PYTHON" -m pip download --quiet --dest bench/wheels --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --python-version "$PY_VERSION" "${pinned[@]}"
du -sh bench/wheels
