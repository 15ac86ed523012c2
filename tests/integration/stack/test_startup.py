"""Services refuse to start on bad configuration, with a message naming what is wrong."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from ragplane.ops import stack
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
    log = tmp_path / "gateway.log"
    proc = spawn_gateway(port, log)
    try:
        for _ in range(100):
            if await stack.health_status(f"127.0.0.1:{port}") == "SERVING":
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail(log.read_text()[-2000:])
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "draining" in text and "gateway stopped" in text


def spawn_gateway(port: int, log) -> subprocess.Popen:
    """The gateway starts without its dependencies: the lightest service to stop."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ragplane.gateway.server"],
            env={
                **os.environ,
                "RAGPLANE_GATEWAY_ADDR": f"127.0.0.1:{port}",
                "RAGPLANE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
