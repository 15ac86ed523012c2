"""Gateway service: the public API, running the indexing and query pipelines."""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc

from ragplane.config import (
    DEFAULT_PORTS,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_str,
    listen_address,
)
from ragplane.errors import InvalidArgument
from ragplane.gateway.clients import Backends, Timeouts, deadline
from ragplane.gateway.indexing import IndexingPipeline
from ragplane.gateway.query import DEFAULT_TOP_K, MAX_TOP_K, QueryPipeline, QuerySettings
from ragplane.server import run_service, serve
from ragplane.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, retriever_pb2

COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
SEARCH_MODES = {
    "dense": common_pb2.SEARCH_MODE_DENSE,
    "keyword": common_pb2.SEARCH_MODE_KEYWORD,
    "hybrid": common_pb2.SEARCH_MODE_HYBRID,
}


@dataclass(frozen=True)
class GatewaySettings:
    address: str
    embedder_target: str
    retriever_target: str
    generator_target: str
    default_collection: str
    chunk_tokens: int
    timeouts: Timeouts
    query: QuerySettings

    @classmethod
    def from_env(cls) -> GatewaySettings:
        def target(service: str) -> str:
            return env_str(
                f"RAGPLANE_GATEWAY_{service.upper()}_TARGET", f"127.0.0.1:{DEFAULT_PORTS[service]}"
            )

        return cls(
            address=listen_address("gateway"),
            embedder_target=target("embedder"),
            retriever_target=target("retriever"),
            generator_target=target("generator"),
            default_collection=env_str("RAGPLANE_GATEWAY_COLLECTION", "default"),
            chunk_tokens=env_int("RAGPLANE_GATEWAY_CHUNK_TOKENS", 200, minimum=32),
            timeouts=Timeouts(
                embed=env_float("RAGPLANE_GATEWAY_EMBED_TIMEOUT_SECONDS", 30.0, minimum=0.1),
                retrieve=env_float("RAGPLANE_GATEWAY_RETRIEVE_TIMEOUT_SECONDS", 30.0, minimum=0.1),
                generate=env_float("RAGPLANE_GATEWAY_GENERATE_TIMEOUT_SECONDS", 120.0, minimum=0.1),
            ),
            query=QuerySettings(
                top_k=env_int(
                    "RAGPLANE_GATEWAY_TOP_K", DEFAULT_TOP_K, minimum=1, maximum=MAX_TOP_K
                ),
                max_tokens=env_int("RAGPLANE_GATEWAY_MAX_TOKENS", 256, minimum=1),
                mode=SEARCH_MODES[
                    env_choice("RAGPLANE_GATEWAY_SEARCH_MODE", "hybrid", tuple(SEARCH_MODES))
                ],
                # The highest threshold that turned away no answerable question of
                # either evaluation set (docs/retrieval.md).
                min_relevance=env_float("RAGPLANE_GATEWAY_MIN_RELEVANCE", 0.35),
                check_names=env_bool("RAGPLANE_GATEWAY_CHECK_NAMES", True),
            ),
        )


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, settings: GatewaySettings, backends: Backends) -> None:
        self._settings = settings
        self._backends = backends
        self._indexing = IndexingPipeline(backends, settings.timeouts, settings.chunk_tokens)
        self._query = QueryPipeline(backends, settings.timeouts, settings.query)

    def _collection(self, name: str) -> str:
        name = name or self._settings.default_collection
        if not COLLECTION_NAME.match(name):
            raise InvalidArgument(
                f"collection {name!r} is not a valid name (letters, digits and _, "
                "not starting with a digit)"
            )
        return name

    async def Ingest(self, request, context):  # noqa: N802 - gRPC method name
        """Loads, chunks, embeds and stores documents; reports each one's outcome."""
        results = await self._indexing.ingest(
            self._collection(request.collection), list(request.documents), context
        )
        return gateway_pb2.IngestResponse(results=results)

    async def DeleteDocument(self, request, context):  # noqa: N802
        """Removes every chunk of one document."""
        if not request.doc_id:
            raise InvalidArgument("doc_id is empty")
        reply = await self._backends.retriever.DeleteDocument(
            retriever_pb2.DeleteDocumentRequest(
                collection=self._collection(request.collection), doc_id=request.doc_id
            ),
            timeout=deadline(context, self._settings.timeouts.retrieve),
        )
        return gateway_pb2.GatewayServiceDeleteDocumentResponse(chunks_deleted=reply.chunks_deleted)

    async def Ask(self, request, context):  # noqa: N802
        """Streams citations, answer deltas and a finished event."""
        async for event in self._query.ask(self._collection(request.collection), request, context):
            yield event

    async def AskUnary(self, request, context):  # noqa: N802
        """The whole answer in one response, for simple callers."""
        inner = request.request
        reply = gateway_pb2.AskUnaryResponse()
        parts: list[str] = []
        async for event in self._query.ask(self._collection(inner.collection), inner, context):
            if event.HasField("citations"):
                reply.citations.extend(event.citations.citations)
            elif event.HasField("finished"):
                reply.finished.CopyFrom(event.finished)
            else:
                parts.append(event.delta)
        reply.answer = "".join(parts)
        return reply


async def run(settings: GatewaySettings) -> None:
    backends = Backends(
        settings.embedder_target, settings.retriever_target, settings.generator_target
    )
    servicer = GatewayServicer(settings, backends)

    def register(server: grpc.aio.Server) -> list[str]:
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
        return [gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name]

    await serve("gateway", settings.address, register, on_shutdown=backends.close)


def main() -> None:
    run_service("gateway", lambda: run(GatewaySettings.from_env()))


if __name__ == "__main__":
    main()
