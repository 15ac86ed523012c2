"""What every service's error interceptor does for a caller: a refusal carries its retry
hint as `retry-after` trailing metadata, on a unary call and on a stream, and bytes that
are not the method's message are INVALID_ARGUMENT with a message, not gRPC's UNKNOWN.
Each method's handler is wrapped once, not on every call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from ragplane.errors import ResourceExhausted
from ragplane.ops.processes import free_port
from ragplane.server import ServiceInterceptor
from ragplane.v1 import (
    embedder_pb2,
    embedder_pb2_grpc,
    generator_pb2,
    generator_pb2_grpc,
)


class Busy(embedder_pb2_grpc.EmbedderServiceServicer):
    async def Embed(self, request, context):  # noqa: N802
        raise ResourceExhausted("the queue is full", retry_after=2.4)


class Streams(generator_pb2_grpc.GeneratorServiceServicer):
    async def Generate(self, request, context):  # noqa: N802
        yield generator_pb2.GenerateResponse(delta="hi")
        if request.max_tokens == 1:  # the test of a refusal after a message
            raise ResourceExhausted("the engine's queue is full", retry_after=1)


class Counting(ServiceInterceptor):
    def __init__(self) -> None:
        super().__init__("embedder")
        self.wrapped: list[str] = []

    def wrap(self, method, handler):
        self.wrapped.append(method)
        return super().wrap(method, handler)


@pytest.fixture
def interceptor() -> Counting:
    return Counting()


@pytest.fixture
async def channel(interceptor) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[interceptor])
    embedder_pb2_grpc.add_EmbedderServiceServicer_to_server(Busy(), server)
    generator_pb2_grpc.add_GeneratorServiceServicer_to_server(Streams(), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(None)


async def test_a_refusal_says_when_to_retry(channel):
    stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Embed(embedder_pb2.EmbedRequest(texts=["x"]), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == "the queue is full"
    assert dict(err.value.trailing_metadata())["retry-after"] == "3"  # whole seconds, up


@pytest.mark.parametrize(
    "method",
    ["/ragplane.v1.EmbedderService/Embed", "/ragplane.v1.GeneratorService/Generate"],
)
async def test_undecodable_bytes_are_invalid_argument(channel, method):
    # Field 1 as a varint of ten 0xff bytes: not a valid protobuf message.
    garbage = b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
    if method.endswith("Generate"):
        call = channel.unary_stream(method)(garbage, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
    else:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(method)(garbage, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid ragplane.v1." in err.value.details()


async def test_a_stream_refused_after_a_message_keeps_both(channel):
    stub = generator_pb2_grpc.GeneratorServiceStub(channel)
    call = stub.Generate(generator_pb2.GenerateRequest(max_tokens=1), timeout=5)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for response in call:
            received.append(response.delta)
    assert received == ["hi"]
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == "the engine's queue is full"
    assert dict(err.value.trailing_metadata())["retry-after"] == "1"


async def test_each_method_is_wrapped_once(channel, interceptor):
    stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Embed(embedder_pb2.EmbedRequest(texts=["x"]), timeout=5)
    streams = generator_pb2_grpc.GeneratorServiceStub(channel)
    for _ in range(2):
        async for _ in streams.Generate(generator_pb2.GenerateRequest(max_tokens=2), timeout=5):
            pass
    assert sorted(interceptor.wrapped) == [
        "/ragplane.v1.EmbedderService/Embed",
        "/ragplane.v1.GeneratorService/Generate",
    ]
