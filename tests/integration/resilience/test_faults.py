"""Each part of the stack killed (SIGKILL) while it answers questions, on a stack of this
module's own under the supervisor `ragplane up` uses: callers get UNAVAILABLE well
within their deadline (no hang, nothing INTERNAL), the gateway's health says NOT_SERVING
while a service behind it is down, and the supervisor restarts the process and asks are
answered again. bench/faults.py runs the same against `ragplane up` for
docs/reliability.md."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest

from bench.burst import open_channels
from bench.faults import FAULTS, kill_and_recover
from ragplane.client import GrpcClient
from ragplane.ops import cli, processes, stack
from tests.support import ROOT, free_ports, shared_model_cache

CORPUS = ROOT / "samples" / "handbook"
COLLECTION = "handbook"
# Long enough for an answer on a busy 2-core machine; a failing call must end far sooner.
DEADLINE_S = 180.0
# The generator's restart loads vLLM again: minutes on a busy CPU.
RECOVER_WITHIN_S = 480.0


@pytest.fixture(scope="module")
async def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[stack.StackLayout]:
    state = tmp_path_factory.mktemp("fault-stack")
    (state / "models").symlink_to(shared_model_cache() / "models", target_is_directory=True)
    ports = free_ports(11)
    layout = stack.StackLayout(
        state_dir=state,
        ports=dict(zip(("milvus", *stack.SERVICES), ports[:5], strict=True)),
        metrics_ports=dict(zip(stack.SERVICES, ports[5:9], strict=True)),
        http_port=ports[9],
        postgres_port=ports[10],
    )
    await stack.up(layout, report=lambda _: None)
    try:
        async with GrpcClient(layout.address("gateway"), api_key=layout.api_key()) as client:
            await cli.ingest(client, [CORPUS], COLLECTION, out=io.StringIO())
        yield layout
    finally:
        stack.down(layout, report=lambda _: None)


@pytest.mark.parametrize("service", FAULTS)
async def test_a_killed_service_fails_fast_and_recovers(fault_stack, service):
    channels = open_channels(fault_stack.address("gateway"), 2, api_key=fault_stack.api_key())
    try:
        result = await kill_and_recover(
            fault_stack,
            service,
            channels,
            collection=COLLECTION,
            deadline_s=DEADLINE_S,
            recover_within_s=RECOVER_WITHIN_S,
        )
    finally:
        for channel in channels:
            await channel.close()
    print(f"\n{result}")
    assert result.survived, result
    assert result.recovered, result
    assert result.restarts == 1
    if service != "milvus":  # Milvus Lite is back within the probes' count, often
        assert result.not_serving_s is not None and result.not_serving_s < 15, result
    assert "UNAVAILABLE" in result.codes or service == "milvus", result
    # The whole stack serves again, the gateway included.
    for name in stack.SERVICES:
        assert await processes.serving(fault_stack.address(name)), name
