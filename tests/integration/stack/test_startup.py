"""Services refuse to start on bad configuration, with a message naming what is wrong."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragplane.ops import processes
from tests.support import free_port


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


async def test_sigterm_drains_and_exits_cleanly(tmp_path):
    """SIGTERM: the service stops accepting, drains, and exits 0 (not killed)."""
    port = free_port()
    proc = spawn_gateway(port, tmp_path / "gateway.log")
    try:
        await proc.wait_serving(f"127.0.0.1:{port}", within_s=20)
    finally:
        # SIGTERM, and SIGKILL only if it has not exited 30 s later.
        code = await asyncio.to_thread(proc.stop, 30)
    text = proc.log.read_text()
    assert code == 0, text[-2000:]
    assert "draining" in text and "gateway stopped" in text


def spawn_gateway(port: int, log: Path) -> processes.Process:
    """The gateway starts without its dependencies: the lightest service to stop."""
    return processes.start_process(
        [sys.executable, "-m", "ragplane.gateway.server"],
        log,
        env={
            **os.environ,
            "RAGPLANE_GATEWAY_ADDR": f"127.0.0.1:{port}",
            "RAGPLANE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            # No keys file: this gateway only starts and stops.
            "RAGPLANE_GATEWAY_AUTH": "disabled",
        },
        name="gateway",
    )
