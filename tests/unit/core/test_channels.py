"""The gateway's channels spread calls over every address of a target (a headless
Kubernetes Service resolves to each ready pod), and servers can age connections out so
that clients find replicas added since."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ragplane.channels import channel_options, client_channel_options, open_channel
from ragplane.ops.processes import free_port
from ragplane.server import server_options
from ragplane.v1 import embedder_pb2, embedder_pb2_grpc

SERVING, NOT_SERVING = (
    health_pb2.HealthCheckResponse.SERVING,
    health_pb2.HealthCheckResponse.NOT_SERVING,
)


async def start_health_server(host: str, port: int, status: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=server_options())
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    assert server.add_insecure_port(f"{host}:{port}") == port
    await server.start()
    await servicer.set("", status)
    return server


async def answers(target: str, options: list, calls: int) -> Counter:
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        replies = [
            (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status
            for _ in range(calls)
        ]
    return Counter(replies)


async def test_calls_go_round_robin_over_the_targets_addresses():
    # Two replicas on one port of two loopback addresses, told apart by their status.
    port = free_port()
    servers = [
        await start_health_server("127.0.0.1", port, SERVING),
        await start_health_server("127.0.0.2", port, NOT_SERVING),
    ]
    try:
        target = f"ipv4:127.0.0.1:{port},127.0.0.2:{port}"
        # Round robin over the ready ones: the first calls may go out before both are.
        spread = await answers(target, client_channel_options(), 20)
        assert set(spread) == {SERVING, NOT_SERVING} and min(spread.values()) >= 6, spread
        # Without it gRPC picks the first address and sends it everything.
        assert len(await answers(target, channel_options(), 20)) == 1
    finally:
        for server in servers:
            await server.stop(None)


def test_connections_age_out_only_when_asked(monkeypatch):
    monkeypatch.delenv("RAGPLANE_GRPC_MAX_CONNECTION_AGE_SECONDS", raising=False)
    assert "grpc.max_connection_age_ms" not in dict(server_options())
    monkeypatch.setenv("RAGPLANE_GRPC_MAX_CONNECTION_AGE_SECONDS", "300")
    monkeypatch.setenv("RAGPLANE_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS", "60")
    options = dict(server_options())
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 60_000


async def test_calls_go_on_across_connections_aged_out(monkeypatch):
    monkeypatch.setenv("RAGPLANE_GRPC_MAX_CONNECTION_AGE_SECONDS", "0.2")
    monkeypatch.setenv("RAGPLANE_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS", "1")
    port = free_port()
    server = await start_health_server("127.0.0.1", port, SERVING)
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=client_channel_options()
        ) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(8):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == SERVING
                await asyncio.sleep(0.1)
    finally:
        await server.stop(None)


class Flaky(embedder_pb2_grpc.EmbedderServiceServicer):
    """Fails the first `failures` calls with UNAVAILABLE, as a restarting replica does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def Embed(self, request, context):  # noqa: N802
        self.calls += 1
        if self.calls <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return embedder_pb2.EmbedResponse()


async def test_idempotent_calls_named_retried_are_sent_again_on_unavailable():
    flaky = Flaky(failures=2)
    server = grpc.aio.server()
    embedder_pb2_grpc.add_EmbedderServiceServicer_to_server(flaky, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        retried = ["ragplane.v1.EmbedderService/Embed"]
        async with open_channel(f"127.0.0.1:{port}", retried=retried) as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            await stub.Embed(embedder_pb2.EmbedRequest(texts=["x"]), timeout=10)
        assert flaky.calls == 3  # two failures, retried with backoff, then the answer
        flaky.calls = 0
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Embed(embedder_pb2.EmbedRequest(texts=["x"]), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and flaky.calls == 1
    finally:
        await server.stop(None)
