#!/usr/bin/env bash
# The GPU path in one go, for a session lent a GPU machine (the device tool; see BENCHMARKS.md):
# what TensorFlow sees, then the base preset on full-size CIFAR-10-shaped data (50,000 training
# pictures, batch 1024) in float32, with uint8 input, bf16/fp16 mixed precision, more steps per
# execution, XLA and the pictures kept on the GPU, pinned to one GPU as a compose worker is.
# Target: <= 0.15 s per epoch on one H100 (the chapter's 2020 GPU took about 2 s).
# Then reruns verified with and without training.deterministic (bench/determinism.py), and the
# improved preset against batch_norm for 50 epochs each (bench/improved.py): on the
# official CIFAR-10 archive when CIFAR10_DIR names a folder holding cifar-10-python.tar.gz,
# else on 50,000 CIFAR-shaped pictures. Goal on real CIFAR-10: improved >= 0.85 test accuracy
# (the chapter's batch_norm: 0.778).
# Last, the chapter study packed at 1, 2, 4 and 8 slots per GPU (bench/packing.py).
#
#   bench/gpu.sh                                # from the repository root, with .venv built
#   CIFAR10_DIR=/data/cifar bench/gpu.sh        # the comparison on real CIFAR-10
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

# ---- Keras backends (issue 28, part 6): a box without TensorFlow (or without the project's
# .venv) runs only bench/gpu-backends.sh, which measures the backends it has; one with
# TensorFlow runs it at the end, after the TensorFlow checks below.
if ! "$PYTHON" -c 'import tensorflow' 2>/dev/null; then
    echo "no TensorFlow in $PYTHON: measuring the Keras backends this box has instead"
    exec bench/gpu-backends.sh
fi
trap 'status=$?; [ "$status" -ne 0 ] || BOX_PYTHON=$PYTHON bench/gpu-backends.sh' EXIT
# ---- end of Keras backends ----

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PYTHON" - <<'PY'
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("TensorFlow", tf.__version__, "sees", gpus)
if not gpus:
    raise SystemExit("TensorFlow sees no GPU: install tensorflow[and-cuda] (see the Dockerfile)")
PY
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} "$PYTHON" bench/training_speed.py \
    --set gpu --images 50000 --batch-size 1024 --epochs 6 --rounds 2
# Reruns with and without training.deterministic, each verified: on a GPU the default's
# fastest kernels may diverge; the deterministic one should be identical (issue 24).
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} "$PYTHON" bench/determinism.py \
    --epochs 3 --images 50000 --batch-size 1024
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} "$PYTHON" bench/improved.py \
    --epochs 50 --images 0 ${CIFAR10_DIR:+--data-dir "$CIFAR10_DIR"}
# Slots (issue 28): the chapter study (13 presets x 2 seeds, 2 epochs each, batch 1024) on
# CIFAR-10 at 1, 2, 4 and 8 runs per GPU (CONVLAB_JOBS_PER_GPU) on one GPU: the whole study's
# wall time and one run's seconds per epoch, as ratios to one slot, with the GPU's utilization
# and memory in use read through NVML while it trains. PACKING_SLOTS=1,4 shortens it.
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} "$PYTHON" bench/packing.py --only cifar10 \
    --chapter --seeds 2 --epochs 2 --batch-size 1024 --slots "${PACKING_SLOTS:-1,2,4,8}" \
    ${CIFAR10_DIR:+--data-dir "$CIFAR10_DIR"} --cifar-shaped 50000
