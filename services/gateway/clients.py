"""The gateway's channels to the services behind it, and the deadline every call carries."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from ragplane import telemetry
from ragplane.server import client_channel_options
from ragplane.v1 import embedder_pb2_grpc, generator_pb2_grpc, retriever_pb2_grpc


@dataclass(frozen=True)
class Timeouts:
    """Longest time each kind of outgoing call may take, in seconds."""

    embed: float
    retrieve: float
    generate: float


def deadline(context: grpc.aio.ServicerContext | None, limit: float) -> float:
    """Timeout for an outgoing call: the configured limit, cut to what the caller has left."""
    if context is None:
        return limit
    remaining = context.time_remaining()
    if remaining is None:
        return limit
    return max(0.001, min(limit, remaining))


class Backends:
    """Stubs for the embedder, retriever and generator, over long-lived channels."""

    def __init__(self, embedder: str, retriever: str, generator: str) -> None:
        options = client_channel_options()
        self._channels = [
            grpc.aio.insecure_channel(
                target, options=options, interceptors=telemetry.client_interceptors(name)
            )
            for name, target in (
                ("embedder", embedder),
                ("retriever", retriever),
                ("generator", generator),
            )
        ]
        self.embedder = embedder_pb2_grpc.EmbedderServiceStub(self._channels[0])
        self.retriever = retriever_pb2_grpc.RetrieverServiceStub(self._channels[1])
        self.generator = generator_pb2_grpc.GeneratorServiceStub(self._channels[2])

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
