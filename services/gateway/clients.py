"""The gateway's channels to the services behind it, and the deadline every call carries."""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc

from ragplane.channels import open_channel
from ragplane.v1 import embedder_pb2_grpc, generator_pb2_grpc, retriever_pb2_grpc


@dataclass(frozen=True)
class Timeouts:
    """Longest time each kind of outgoing call may take, in seconds."""

    embed: float
    retrieve: float
    generate: float


class Deadline:
    """The time a caller allowed, from when its call arrived; every outgoing call's timeout
    is the configured limit for its kind, cut to what is left of it."""

    def __init__(self, budget: float | None) -> None:
        self._at = None if budget is None else time.monotonic() + budget

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext | None) -> Deadline:
        return cls(None if context is None else context.time_remaining())

    def remaining(self) -> float | None:
        return None if self._at is None else self._at - time.monotonic()

    def timeout(self, limit: float) -> float:
        remaining = self.remaining()
        if remaining is None:
            return limit
        return max(0.001, min(limit, remaining))


def deadline(context: grpc.aio.ServicerContext | None, limit: float) -> float:
    """Timeout for an outgoing call: the configured limit, cut to what the caller has left."""
    return Deadline.of(context).timeout(limit)


class Backends:
    """Stubs for the embedder, retriever and generator, over long-lived channels."""

    def __init__(self, embedder: str, retriever: str, generator: str) -> None:
        self._channels = [
            open_channel(target, service=name)
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
