# The moonshine-tfx pipeline image: every Kubeflow component runs it, with the
# model code (models/, components/, pipeline/) baked in and referenced by
# dotted path.
#
#   GPU (default):  docker build -t REGISTRY/moonshine-tfx:TAG .
#   CPU-only:       docker build --build-arg VARIANT=cpu -t REGISTRY/moonshine-tfx-cpu:TAG .
#   pin the base:   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.3.2-runtime-ubuntu22.04@sha256:DIGEST ...
#
# TensorFlow 2.16 is built against CUDA 12.3 and cuDNN 8.9 and dlopens
# libcudnn.so.8, so the GPU base is CUDA 12.3's runtime image plus cuDNN 8.9.7
# from NVIDIA's apt repository (the image already has it configured). The
# nvidia/cuda *-cudnn9-* tags carry cuDNN 9 only: TF 2.16 would not find a GPU.
# Any base must be Ubuntu 22.04 (Python 3.10, glibc of the builder stage).

ARG BASE_IMAGE=nvidia/cuda:12.3.2-runtime-ubuntu22.04
ARG CPU_BASE_IMAGE=ubuntu:22.04
ARG VARIANT=gpu
ARG CUDNN_VERSION=8.9.7.29-1+cuda12.2

# --- builder: the pinned virtualenv and the project ---------------------------
FROM ${CPU_BASE_IMAGE} AS builder
ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu's archive keeps only the newest build of each package in jammy-updates,
# so exact apt pins would break the build at the next security update; the
# base image tag pins the release, and requirements.lock pins every Python
# package. build-essential and python3.10-dev build the lock's packages that
# PyPI ships as source only (pyfarmhash, a C extension).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential python3.10 python3.10-dev python3.10-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3.10 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir pip==24.2 \
 && pip install --no-cache-dir --no-deps -r /tmp/requirements.lock
WORKDIR /opt/moonshine-tfx
COPY . .
RUN pip install --no-cache-dir --no-deps . \
 && rm -rf build ./*.egg-info

# --- the two bases -------------------------------------------------------------
FROM ${CPU_BASE_IMAGE} AS base-cpu

FROM ${BASE_IMAGE} AS base-gpu
ARG CUDNN_VERSION
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends "libcudnn8=${CUDNN_VERSION}" \
 && apt-mark hold libcudnn8 \
 && rm -rf /var/lib/apt/lists/*

# --- runtime ---------------------------------------------------------------------
# base-gpu or base-cpu: a stage above, not a registry image.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
# Unpinned for the reason given in the builder stage. libsndfile1: soundfile
# (FLAC decoding); ca-certificates: TLS to gs:// and s3://.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates libsndfile1 python3.10 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 moonshine \
 && useradd --uid 1000 --gid moonshine --create-home --no-log-init moonshine \
 && mkdir -p /gcs /minio /s3 \
 && chown moonshine:moonshine /gcs /minio /s3
# /gcs, /minio, /s3: where the KFP v2 launcher stages artifacts; a non-root
# container cannot create them itself.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/moonshine-tfx /opt/moonshine-tfx
ENV PATH=/opt/venv/bin:$PATH \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1
WORKDIR /opt/moonshine-tfx
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
# Kubeflow sets the command of every component; this is for `docker run`.
CMD ["moonshine-tfx", "--help"]
