# nomad-triton inference server image: `nomad-triton serve` (PyTriton + tritonserver) on CUDA.
# Build:  docker build -t nomad-triton-serve .
# Run:    docker run --gpus all --shm-size=1g -p 8000-8002:8000-8002 -v $PWD/examples/models:/models:ro \
#           nomad-triton-serve
# The python-backend stub links libpython3.11.so.1.0 dynamically, so the venv is built from the same
# deadsnakes python3.11 whose libpython3.11 is installed here (see docs/serve.md).

# Pinned CUDA runtime base: Ubuntu 22.04 has the glibc 2.35 that the nvidia-pytriton wheel needs.
FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python 3.11 with its shared libpython from deadsnakes (Ubuntu 22.04 itself only has a 3.11 RC).
# apt package versions float within the pinned base image and PPA; the Python packages are pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv libpython3.11 \
    && apt-get purge -y --auto-remove software-properties-common gnupg \
    && rm -rf /var/lib/apt/lists/*

# Exactly what uv.lock pins (the lock the tests ran on), with hashes: `make lock` writes both files.
# requirements.txt is the runtime closure; build-requirements.txt the setuptools that builds /src below.
COPY docker/requirements.txt docker/build-requirements.txt /tmp/
RUN python3.11 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir --require-hashes -r /tmp/requirements.txt \
    && pip install --no-cache-dir --require-hashes -r /tmp/build-requirements.txt \
    && rm /tmp/requirements.txt /tmp/build-requirements.txt

# The project itself last, so code changes do not rebuild the dependency layer.
COPY pyproject.toml README.md /src/
COPY nomad_triton /src/nomad_triton
COPY templates /src/templates
RUN pip install --no-cache-dir --no-deps --no-build-isolation /src \
    && python -c "import nomad_triton.server.app, onnxruntime, tritonclient.grpc"

RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin triton \
    && mkdir -p /models \
    && chown triton:triton /models
USER 10001
WORKDIR /home/triton

# Model repository: mount one folder per model (model.toml) here, or bake it in with a child image.
VOLUME ["/models"]
EXPOSE 8000 8001 8002

# Port 8000 unless Nomad assigned NOMAD_PORT_http; 400 (not ready) or no answer marks it unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('NOMAD_PORT_http', '8000') + '/v2/health/ready', timeout=2)"]

# exec form: the launcher is PID 1 and gets SIGTERM itself, so `docker stop` / Nomad drain it.
# (Run with --init, or Nomad's docker `init = true`, to reap any stray grandchildren.)
ENTRYPOINT ["nomad-triton", "serve"]
CMD ["--models", "/models", "--host", "0.0.0.0"]
