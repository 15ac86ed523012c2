"""Fixtures of the jobs suite: the handbook as client documents, a PostgreSQL of the
module's own, and extra gateway processes beside the session stack's."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ragplane.client import Document
from ragplane.ops import postgres, processes, stack
from ragplane.ops.cli import find_documents
from tests.support import ROOT, free_port, free_ports

CORPUS = ROOT / "samples" / "handbook"


def handbook(prefix: str = "") -> list[Document]:
    """samples/handbook as the CLI sends it: doc_id relative to the folder."""
    found = [entry for entry in find_documents([CORPUS]) if isinstance(entry, tuple)]
    return [
        Document(doc_id=f"{prefix}{doc_id}", source=str(file), content=file.read_bytes())
        for doc_id, file in found
    ]


@pytest.fixture(scope="module")
async def jobs_database(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A PostgreSQL of this module's own (as `ragplane up` starts it): its DSN."""
    state = tmp_path_factory.mktemp("jobs-db")
    proc, dsn = await postgres.start_postgres(
        state / "postgres", free_port(), state / "postgres.log"
    )
    try:
        yield dsn
    finally:
        proc.stop(timeout=20.0)


@dataclass
class Gateway:
    """A gateway process: its gRPC and HTTP addresses."""

    process: processes.Process
    address: str
    http_url: str


@pytest.fixture(scope="module")
async def start_gateway(
    running_stack: stack.StackLayout, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Callable[..., object]]:
    """Starts gateway processes over the session stack's embedder, retriever and
    generator, with the given jobs database; all stopped at the end."""
    started: list[Gateway] = []
    logs = tmp_path_factory.mktemp("gateways")

    async def start(dsn: str, **env: str) -> Gateway:
        grpc_port, http_port, metrics_port = free_ports(3)
        environment = running_stack.service_env(
            {
                "RAGPLANE_GATEWAY_ADDR": f"127.0.0.1:{grpc_port}",
                "RAGPLANE_GATEWAY_HTTP_ADDR": f"127.0.0.1:{http_port}",
                "RAGPLANE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
                "RAGPLANE_GATEWAY_JOBS_DSN": dsn,
                "OTEL_TRACES_EXPORTER": "none",
                "RAGPLANE_GATEWAY_KEY_REQUESTS_PER_SECOND": "0",
                "RAGPLANE_GATEWAY_KEY_MAX_STREAMS": "0",
                **env,
            }
        )
        log = Path(logs) / f"gateway-{len(started)}.log"
        proc = processes.start_process(
            [sys.executable, "-m", "ragplane.gateway.server"], log, env=environment, name="gateway"
        )
        gateway = Gateway(proc, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}")
        started.append(gateway)
        await proc.wait_serving(gateway.address, within_s=120)
        return gateway

    yield start
    for gateway in started:
        gateway.process.stop(timeout=20.0)
