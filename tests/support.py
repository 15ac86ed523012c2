"""Helpers the tests share: the repository root, free ports, the converted-model cache."""

from __future__ import annotations

import os
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all sockets stay open until every port is picked."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def shared_model_cache() -> Path:
    """Converted models survive across test runs here (RAGPLANE_TEST_STATE_DIR)."""
    path = Path(os.environ.get("RAGPLANE_TEST_STATE_DIR", ROOT / ".ragplane" / "test-state"))
    (path / "models").mkdir(parents=True, exist_ok=True)
    return path
