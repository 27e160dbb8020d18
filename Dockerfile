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
# The cost: about 3-4 GB of CUDA libraries, in a layer that changes only with the TensorFlow pin.
#
# Build arguments, for labs behind a firewall and for machines without a GPU:
#   BASE_IMAGE         any Debian-like image with Python 3.11-3.13 and its venv module: the same
#                      image from a registry mirror, or one built from Debian's packages
#                      (scripts/docker-images.sh makes convlab-base that way, no registry needed)
#   TENSORFLOW_EXTRA   "and-cuda" (default: the CUDA wheels) or "" (plain tensorflow, CPU only,
#                      about 3 GB smaller; docker-compose.cpu.yml sets it)
#   PIP_INDEX_URL      a PyPI mirror for every install below (unset: pypi.org); with
#   PIP_TRUSTED_HOST   the mirror's host name where it has no certificate the image trusts
# No `# syntax=` line: BuildKit would fetch that frontend from a registry.
ARG BASE_IMAGE=python:3.12-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python3 -m venv /opt/venv \
    && useradd --system --user-group --uid 10001 --create-home --home-dir /home/convlab convlab \
    && mkdir -p /var/lib/convlab /data \
    && chown convlab:convlab /var/lib/convlab

# A PyPI mirror, unset unless given: pip reads these from the environment of each RUN below.
ARG PIP_INDEX_URL
ARG PIP_TRUSTED_HOST
# The big layer first, so that editing the code or the other pins does not download it again.
# Keep this range equal to pyproject.toml's tensorflow pin (tests/test_compose.py checks it).
ARG TENSORFLOW_EXTRA=and-cuda
ARG TENSORFLOW_VERSION=">=2.21,<2.22"
RUN pip install "tensorflow${TENSORFLOW_EXTRA:+[$TENSORFLOW_EXTRA]}$TENSORFLOW_VERSION"

WORKDIR /app
COPY pyproject.toml ./
COPY client ./client
# The other dependencies next, read from pyproject.toml: a layer that a change of the code
# leaves cached (about two minutes of installs). The client (and the `convlab` command) is a
# distribution of its own that the server's depends on: installed in the same step, pip takes
# it from ./client, not from an index.
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" >/tmp/requirements.txt \
    && pip install ./client -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY api ./api
COPY commands ./commands
COPY core ./core
COPY jobs ./jobs
COPY models ./models
COPY store ./store
COPY views ./views
COPY worker ./worker
RUN pip install --no-deps .

USER convlab
# CONVLAB_HOME is a volume in docker-compose.yml; Keras keeps its download cache under it.
ENV CONVLAB_HOME=/var/lib/convlab \
    KERAS_HOME=/var/lib/convlab/keras
EXPOSE 8000
# The API's health; the worker service in docker-compose.yml replaces it with a Celery ping.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["uvicorn", "--factory", "api.main:create_app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "5"]
