# syntax=docker/dockerfile:1
# The TTG image: the `ttg` entry point for workers and the in-cluster coordinator.
#   make image        (docker build -t ttg-worker:<version> .)
# Runs as a non-root user and needs no writable root filesystem (only /tmp and /results, mounted by the manifests).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY ttg ./ttg
RUN python -m venv /opt/ttg && /opt/ttg/bin/pip install --no-compile '.[all,k8s]'

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ttg-worker" \
      org.opencontainers.image.description="TTG worker and coordinator: parameter sweeps through Redis Streams or RabbitMQ that prove nothing was lost" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/ttg/ttg"
# tini as PID 1: it passes SIGTERM on to the worker (terminate-pod: the worker drains, exits 143) and reports a worker
# SIGKILLed through exec (kill-pod) as 137. A container's PID 1 itself cannot be SIGKILLed from inside its namespace.
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 ttg && useradd --system --uid 10001 --gid ttg --home-dir /nonexistent --no-create-home ttg
COPY --from=build /opt/ttg /opt/ttg
ENV PATH=/opt/ttg/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["/usr/bin/tini", "--", "ttg"]
CMD ["--help"]
