"""Which backend the embedder runs: RAGPLANE_EMBEDDER_BACKEND and the device."""

from __future__ import annotations

import pytest

from ragplane.embedder.backends import CPU_BACKEND, ONNX, TORCH, backend_for
from ragplane.embedder.server import EmbedderSettings
from ragplane.errors import ConfigError


def test_auto_runs_torch_on_a_gpu_and_the_measured_one_on_a_cpu():
    assert backend_for("cuda:0", "auto") == TORCH
    assert backend_for("cpu", "auto") == CPU_BACKEND
    assert backend_for("cpu", ONNX) == ONNX
    assert backend_for("cpu", TORCH) == TORCH


def test_onnx_on_a_gpu_is_refused():
    with pytest.raises(ConfigError, match="RAGPLANE_EMBEDDER_BACKEND=onnx runs on a CPU only"):
        backend_for("cuda:0", ONNX)


def test_the_setting_is_read_and_checked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("RAGPLANE_EMBEDDER_BACKEND", raising=False)
    assert EmbedderSettings.from_env().backend == "auto"
    monkeypatch.setenv("RAGPLANE_EMBEDDER_BACKEND", "onnx")
    assert EmbedderSettings.from_env().backend == ONNX
    monkeypatch.setenv("RAGPLANE_EMBEDDER_BACKEND", "openvino")
    with pytest.raises(ConfigError, match="RAGPLANE_EMBEDDER_BACKEND='openvino' must be one of"):
        EmbedderSettings.from_env()
