"""Shared fixtures. The integration stack starts the real services once per test session."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from ragplane import stack
from ragplane.server import channel_options

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shared_model_cache() -> Path:
    """Converted models survive across test runs here (RAGPLANE_TEST_STATE_DIR)."""
    path = Path(os.environ.get("RAGPLANE_TEST_STATE_DIR", ROOT / ".ragplane" / "test-state"))
    (path / "models").mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
async def running_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[stack.StackLayout]:
    """Milvus Lite and the four services as real processes on free loopback ports."""
    state = tmp_path_factory.mktemp("stack")
    (state / "models").symlink_to(shared_model_cache() / "models", target_is_directory=True)
    layout = stack.StackLayout(
        state_dir=state,
        ports={name: free_port() for name in ("milvus", *stack.SERVICES)},
        metrics_ports={name: free_port() for name in stack.SERVICES},
    )
    await stack.up(layout, env_extra={"RAGPLANE_LOG_LEVEL": "INFO"}, report=lambda _: None)
    try:
        yield layout
    finally:
        stack.down(layout, report=lambda _: None)


@pytest.fixture(scope="session")
async def channels(running_stack: stack.StackLayout) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    opened = {
        name: grpc.aio.insecure_channel(running_stack.address(name), options=channel_options())
        for name in stack.SERVICES
    }
    yield opened
    for channel in opened.values():
        await channel.close()
