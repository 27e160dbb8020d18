# syntax=docker/dockerfile:1
# convlab's one image: the API (`uvicorn ...`) and the GPU worker (`celery ... worker`) run it
# with different commands (see docker-compose.yml).
#
# Base: python:3.12-slim plus TensorFlow's own CUDA wheels (`tensorflow[and-cuda]`), not an
# nvidia/cuda or tensorflow/tensorflow:*-gpu image. This is the install TensorFlow documents
# for pip on Linux: the CUDA and cuDNN libraries come pinned to the TensorFlow release from
# PyPI, so the host needs only an NVIDIA driver recent enough for CUDA 12 and the NVIDIA
# Container Toolkit. It also keeps the Python version and the pins in pyproject.toml in force,
# where a tensorflow/tensorflow tag brings its own Python and its own TensorFlow (and may not
# exist for the release we pin). Without a GPU the same image trains on the CPU.
# The cost: about 3-4 GB of CUDA libraries, in a layer that changes only with TENSORFLOW below.
FROM python:3.12-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv \
    && useradd --system --user-group --uid 10001 --create-home --home-dir /home/convlab convlab \
    && mkdir -p /var/lib/convlab /data \
    && chown convlab:convlab /var/lib/convlab

# The big layer first, so that editing the code or the other pins does not download it again.
# Keep this range equal to pyproject.toml's tensorflow pin (tests/test_compose.py checks it).
ARG TENSORFLOW="tensorflow[and-cuda]>=2.21,<2.22"
RUN pip install "$TENSORFLOW"

WORKDIR /app
COPY pyproject.toml ./
COPY client ./client
COPY api ./api
COPY commands ./commands
COPY core ./core
COPY jobs ./jobs
COPY models ./models
COPY store ./store
COPY views ./views
COPY worker ./worker
# The client (and the `convlab` command) is a distribution of its own that the server's depends
# on: installed in the same step, pip takes it from ./client, not from an index.
RUN pip install ./client .

USER convlab
# CONVLAB_HOME is a volume in docker-compose.yml; Keras keeps its download cache under it.
ENV CONVLAB_HOME=/var/lib/convlab \
    KERAS_HOME=/var/lib/convlab/keras
EXPOSE 8000
CMD ["uvicorn", "--factory", "api.main:create_app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "5"]
