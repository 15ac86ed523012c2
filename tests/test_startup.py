"""Services refuse to start on bad configuration, with a message naming what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import free_port


def start(service: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"ragplane.{service}.server"],
        env={
            **os.environ,
            f"RAGPLANE_{service.upper()}_ADDR": f"127.0.0.1:{free_port()}",
            f"RAGPLANE_{service.upper()}_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_embedder_with_other_weights_than_pinned_refuses_to_start():
    result = start("embedder", RAGPLANE_EMBEDDER_WEIGHTS_SHA256="0" * 64)
    assert result.returncode == 2
    assert "RAGPLANE_EMBEDDER_WEIGHTS_SHA256 pins 000" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("service", "name", "value"),
    [
        ("gateway", "RAGPLANE_GATEWAY_SEARCH_MODE", "fuzzy"),
        ("embedder", "RAGPLANE_EMBEDDER_MAX_BATCH_SIZE", "many"),
        ("generator", "RAGPLANE_GENERATOR_BACKEND", "llama"),
        ("retriever", "RAGPLANE_MILVUS_TIMEOUT_SECONDS", "-1"),
    ],
)
def test_bad_settings_name_the_variable(service, name, value):
    result = start(service, **{name: value})
    assert result.returncode == 2
    assert name in result.stderr
    assert "Traceback" not in result.stderr
