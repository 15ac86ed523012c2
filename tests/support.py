"""Helpers the tests share: the repository root, free ports, the converted-model cache."""

from __future__ import annotations

import os
from pathlib import Path

from ragplane.ops.processes import free_port, free_ports

__all__ = ["ROOT", "free_port", "free_ports", "local", "shared_model_cache"]

ROOT = Path(__file__).resolve().parents[1]


def shared_model_cache() -> Path:
    """Converted models survive across test runs here (RAGPLANE_TEST_STATE_DIR)."""
    path = Path(os.environ.get("RAGPLANE_TEST_STATE_DIR", ROOT / ".ragplane" / "test-state"))
    (path / "models").mkdir(parents=True, exist_ok=True)
    return path


def local(name: str) -> str:
    """The name the retriever stores the local tenant's collection `name` under (the
    suite's key is the local tenant's): for tests that look behind the gateway."""
    from ragplane.gateway.tenancy import stored_name
    from ragplane.keys import LOCAL_TENANT

    return stored_name(LOCAL_TENANT, name)
