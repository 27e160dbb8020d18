#!/usr/bin/env bash
# ---- Keras backends on a GPU box (issue 28, part 6) ----
# For a GPU machine that has JAX or PyTorch (and NumPy) but perhaps no TensorFlow and no
# network: carry this repository with bench/wheels/ (made by bench/wheels.sh where there is a
# network: Keras, its small dependencies, pydantic and Pillow, 19 MB for Python 3.11). This
# installs those wheels offline into a venv that also sees the box's own packages, then times the
# base preset on each backend the box has (bench/backends.py: seconds per epoch, the ratio to
# the first, and the device each ran on), on 50,000 CIFAR-10-shaped pictures made here, or on
# the official archive when CIFAR10_DIR names its folder. bench/gpu.sh runs this too.
#
#   bench/gpu-backends.sh                       # BOX_PYTHON=python3 by default
#   CIFAR10_DIR=/data/cifar bench/gpu-backends.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BOX_PYTHON=${BOX_PYTHON:-python3}
VENV=.bench/backends

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
backends=$("$BOX_PYTHON" -c 'import importlib.util as u
print(",".join(n for n in ("tensorflow", "jax", "torch") if u.find_spec(n)))')
if [ -z "$backends" ]; then
    echo "no Keras backend (tensorflow, jax or torch) in $BOX_PYTHON: nothing to measure" >&2
    exit 1
fi
if "$BOX_PYTHON" -c 'import keras, pydantic, PIL' 2>/dev/null; then
    run=$BOX_PYTHON  # it has them already (the project's .venv, say)
else
    test -x "$VENV/bin/python" || "$BOX_PYTHON" -m venv "$VENV"
    # The box's packages (its JAX or PyTorch, NumPy), whether BOX_PYTHON is a venv or not.
    "$BOX_PYTHON" -c 'import site; print("\n".join(site.getsitepackages()))' \
        > "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/box.pth"
    "$VENV/bin/python" -m pip install --quiet --no-index --find-links bench/wheels \
        keras pydantic pillow
    run=$VENV/bin/python
fi
data=(--images 50000)
if [ -n "${CIFAR10_DIR:-}" ]; then data=(--data-dir "$CIFAR10_DIR"); fi
echo "backends on this box: $backends (the first is the baseline of the ratios)"
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} "$run" bench/backends.py \
    --backends "$backends" --epochs 6 --rounds 2 "${data[@]}"
# ---- end of Keras backends ----
