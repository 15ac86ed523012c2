"""The gateway's channels to the services behind it, and the deadline every call carries."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc

from ragplane.channels import open_channel
from ragplane.gateway import breaker
from ragplane.gateway.quotas import Quotas
from ragplane.gateway.tenancy import NamespacedRetriever
from ragplane.v1 import embedder_pb2_grpc, generator_pb2_grpc, retriever_pb2_grpc

# The idempotent calls gRPC retries on UNAVAILABLE (ragplane.channels.RETRY_POLICY);
# Generate, Upsert and the deletes are not retried.
RETRIED = {
    "embedder": ["Info", "Embed", "Tokenize"],
    "retriever": ["DescribeCollection", "ListCollections", "ListDocuments", "Search"],
    "generator": ["Info", "CountPromptTokens"],
}
SERVICE_NAMES = {
    "embedder": "ragplane.v1.EmbedderService",
    "retriever": "ragplane.v1.RetrieverService",
    "generator": "ragplane.v1.GeneratorService",
}
# How often the gateway asks each service behind it for its health.
PROBE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Timeouts:
    """Longest time each kind of outgoing call may take, in seconds: a cap on what the
    caller's deadline leaves, not a replacement for it."""

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
    """Stubs for the embedder, retriever and generator, over long-lived channels: each
    behind a circuit breaker (breaker.py), its idempotent calls retried by gRPC."""

    def __init__(
        self, embedder: str, retriever: str, generator: str, quotas: Quotas | None = None
    ) -> None:
        targets = {"embedder": embedder, "retriever": retriever, "generator": generator}
        self.breakers = {name: breaker.CircuitBreaker(name) for name in targets}
        self._channels = {
            name: open_channel(
                target,
                service=name,
                retried=[f"{SERVICE_NAMES[name]}/{m}" for m in RETRIED[name]],
                interceptors=breaker.interceptors(self.breakers[name]),
            )
            for name, target in targets.items()
        }
        self.embedder = embedder_pb2_grpc.EmbedderServiceStub(self._channels["embedder"])
        # Every retriever call is confined to the calling tenant's collections (tenancy.py).
        self.retriever = NamespacedRetriever(
            retriever_pb2_grpc.RetrieverServiceStub(self._channels["retriever"]), quotas
        )
        self.generator = generator_pb2_grpc.GeneratorServiceStub(self._channels["generator"])
        self._probes: asyncio.Task[None] | None = None

    def start_probes(self) -> None:
        """Health-checks every service each PROBE_INTERVAL_S; the breakers follow."""
        self._probes = asyncio.create_task(self._probe_forever())

    async def _probe_forever(self) -> None:
        while True:
            results = await asyncio.gather(
                *(breaker.probe(channel) for channel in self._channels.values())
            )
            for name, (serving, status) in zip(self._channels, results, strict=True):
                self.breakers[name].probed(serving, status)
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def ready(self) -> bool:
        """Whether every service behind the gateway can be called (no breaker open)."""
        return not any(b.open for b in self.breakers.values())

    async def close(self) -> None:
        if self._probes is not None:
            self._probes.cancel()
        for channel in self._channels.values():
            await channel.close()
