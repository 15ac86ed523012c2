"""GatewayService over gRPC: translates ragplane.v1 messages to the pipelines' types and
back; the logic is in query.py, indexing.py and collections.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from ragplane.errors import InvalidArgument
from ragplane.gateway import api
from ragplane.gateway.clients import Backends, Deadline, Timeouts
from ragplane.gateway.collections import (
    CollectionInfo,
    Collections,
    DocumentInfo,
    DocumentPatch,
)
from ragplane.gateway.grpc_jobs import JobRpcs
from ragplane.gateway.indexing import IndexingPipeline
from ragplane.gateway.jobs import IngestJobs
from ragplane.gateway.query import QueryPipeline
from ragplane.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

MODES: dict[int, api.SearchMode] = {
    common_pb2.SEARCH_MODE_DENSE: "dense",
    common_pb2.SEARCH_MODE_KEYWORD: "keyword",
    common_pb2.SEARCH_MODE_HYBRID: "hybrid",
}
FUSIONS: dict[int, api.FusionMethod] = {
    common_pb2.FUSION_METHOD_RRF: "rrf",
    common_pb2.FUSION_METHOD_WEIGHTED: "weighted",
}
ABSTAIN_REASONS = {
    None: gateway_pb2.ABSTAIN_REASON_UNSPECIFIED,
    api.AbstainReason.NO_HITS: gateway_pb2.ABSTAIN_REASON_NO_HITS,
    api.AbstainReason.LOW_RELEVANCE: gateway_pb2.ABSTAIN_REASON_LOW_RELEVANCE,
    api.AbstainReason.UNKNOWN_NAMES: gateway_pb2.ABSTAIN_REASON_UNKNOWN_NAMES,
}
FINISH_REASONS = {"stop": common_pb2.FINISH_REASON_STOP, "length": common_pb2.FINISH_REASON_LENGTH}


class GatewayServicer(JobRpcs, gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        indexing: IndexingPipeline,
        query: QueryPipeline,
        backends: Backends,
        timeouts: Timeouts,
        default_collection: str,
        jobs: IngestJobs | None = None,
    ) -> None:
        self._indexing = indexing
        self._query = query
        self._backends = backends
        self._timeouts = timeouts
        self._default_collection = default_collection
        self._collections = Collections(backends, timeouts, default_collection)
        # Ingestion jobs (grpc_jobs.py); without a database they answer FAILED_PRECONDITION.
        self._jobs = jobs or IngestJobs(None, indexing, self._collections)

    def _collection(self, name: str) -> str:
        return api.valid_collection(name, self._default_collection)

    async def Ingest(self, request, context):  # noqa: N802 - gRPC method name
        """Loads, chunks, embeds and stores documents; reports each one's outcome."""
        results = await self._indexing.ingest(
            self._collection(request.collection), list(request.documents), Deadline.of(context)
        )
        return gateway_pb2.IngestResponse(results=results)

    async def DeleteDocument(self, request, context):  # noqa: N802
        """Removes every chunk of one document; NOT_FOUND if there is no such document."""
        deleted = await self._collections.delete(
            request.collection, request.doc_id, context.time_remaining()
        )
        return gateway_pb2.GatewayServiceDeleteDocumentResponse(chunks_deleted=deleted)

    async def CreateCollection(self, request, context):  # noqa: N802
        """Creates a collection bound to the embedder's model."""
        created, is_new = await self._collections.create(
            request.name, request.description, request.exist_ok, context.time_remaining()
        )
        return gateway_pb2.GatewayServiceCreateCollectionResponse(
            collection=collection_message(created), created=is_new
        )

    async def ListCollections(self, request, context):  # noqa: N802
        """Every collection with its model and chunk count."""
        found = await self._collections.list_collections(context.time_remaining())
        return gateway_pb2.GatewayServiceListCollectionsResponse(
            collections=[collection_message(c) for c in found]
        )

    async def DescribeCollection(self, request, context):  # noqa: N802
        """One collection: model, description, chunk and document counts, times."""
        found = await self._collections.describe(request.name, context.time_remaining())
        return gateway_pb2.GatewayServiceDescribeCollectionResponse(
            collection=collection_message(found)
        )

    async def DropCollection(self, request, context):  # noqa: N802
        """Drops a collection and every document in it."""
        await self._collections.drop(request.name, context.time_remaining())
        return gateway_pb2.GatewayServiceDropCollectionResponse()

    async def ListDocuments(self, request, context):  # noqa: N802
        """A page of a collection's documents, by doc_id."""
        page = await self._collections.documents(
            request.collection, request.page_size, request.page_token, context.time_remaining()
        )
        return gateway_pb2.GatewayServiceListDocumentsResponse(
            documents=[document_message(d) for d in page.documents],
            next_page_token=page.next_page_token,
        )

    async def GetDocument(self, request, context):  # noqa: N802
        """One document; NOT_FOUND if the collection has no such document."""
        found = await self._collections.get(
            request.collection, request.doc_id, context.time_remaining()
        )
        return gateway_pb2.GatewayServiceGetDocumentResponse(document=document_message(found))

    async def UpdateDocument(self, request, context):  # noqa: N802
        """Changes a document's tags, metadata or title without re-embedding it."""
        p = request.patch
        patch = DocumentPatch(
            tags=tuple(p.tags.values) if p.HasField("tags") else None,
            metadata=dict(p.metadata.entries) if p.HasField("metadata") else None,
            title=p.title if p.HasField("title") else None,
        )
        updated = await self._collections.update(
            request.collection, request.doc_id, patch, context.time_remaining()
        )
        return gateway_pb2.GatewayServiceUpdateDocumentResponse(document=document_message(updated))

    async def Ask(self, request, context):  # noqa: N802
        """Streams citations, answer deltas and a finished event."""
        async for event in self._ask(request, context):
            yield event

    async def AskUnary(self, request, context):  # noqa: N802
        """The whole answer in one response, for simple callers."""
        reply = gateway_pb2.AskUnaryResponse()
        parts: list[str] = []
        async for event in self._ask(request.request, context):
            if event.HasField("citations"):
                reply.citations.extend(event.citations.citations)
            elif event.HasField("finished"):
                reply.finished.CopyFrom(event.finished)
            else:
                parts.append(event.delta)
        reply.answer = "".join(parts)
        return reply

    async def Search(self, request, context):  # noqa: N802
        """Retrieval only: ranked hits and whether an Ask would abstain on them."""
        query = api.SearchQuery(
            query=request.query,
            retrieval=retrieval_of(request, self._collection(request.collection)),
            context_top_k=request.context_top_k,
        )
        result = await self._query.search(query, context.time_remaining())
        t = result.timings
        return gateway_pb2.GatewayServiceSearchResponse(
            hits=[scored_chunk(h) for h in result.hits],
            abstain_reason=ABSTAIN_REASONS[result.abstain_reason],
            unknown_names=result.unknown_names,
            timings=gateway_pb2.SearchTimings(
                embed_ms=t.embed_ms,
                retrieve_ms=t.retrieve_ms,
                rerank_ms=t.rerank_ms,
                total_ms=t.total_ms,
            ),
        )

    async def _ask(
        self, request: gateway_pb2.AskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.AskResponse]:
        query = api.AskQuery(
            question=request.question,
            retrieval=retrieval_of(request, self._collection(request.collection)),
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=tuple(request.stop),
            history=tuple(api.Turn(t.role, t.content) for t in request.history),
        )
        async for event in self._query.ask(query, context.time_remaining()):
            yield ask_response(event)


def retrieval_of(
    request: gateway_pb2.AskRequest | gateway_pb2.GatewayServiceSearchRequest, collection: str
) -> api.Retrieval:
    f, fusion, rerank = request.filter, request.fusion, request.rerank
    return api.Retrieval(
        collection=collection,
        extra_collections=tuple(request.extra_collections),
        top_k=request.top_k,
        mode=_known(MODES, request.mode, "mode"),
        filter=api.Filter(tuple(f.doc_ids), f.source_prefix, tuple(f.tags)),
        fusion=api.Fusion(
            _known(FUSIONS, fusion.method, "fusion.method"),
            fusion.rrf_k,
            fusion.dense_weight,
            fusion.keyword_weight,
        ),
        rerank=api.Rerank(
            _tristate(
                rerank.mode, common_pb2.RERANK_MODE_ON, common_pb2.RERANK_MODE_OFF, "rerank.mode"
            ),
            rerank.candidates,
            rerank.weight,
        ),
        identifier_boost=_tristate(
            request.identifier_boost,
            common_pb2.IDENTIFIER_BOOST_ON,
            common_pb2.IDENTIFIER_BOOST_OFF,
            "identifier_boost",
        ),
    )


def _known(names: dict, value: int, field: str):
    """None for UNSPECIFIED (the server's default), the name for a known value."""
    if value == 0:
        return None
    if value not in names:
        raise InvalidArgument(f"{field} {value} is not a known value")
    return names[value]


def _tristate(value: int, on: int, off: int, field: str) -> bool | None:
    """None for UNSPECIFIED (the server's default), else whether it is ON."""
    if value == 0:
        return None
    if value not in (on, off):
        raise InvalidArgument(f"{field} {value} is not a known value")
    return value == on


def scored_chunk(hit: api.Hit) -> common_pb2.ScoredChunk:
    c = hit.chunk
    return common_pb2.ScoredChunk(
        chunk=common_pb2.Chunk(
            id=c.id,
            doc_id=c.doc_id,
            title=c.title,
            source=c.source,
            section=c.section,
            position=c.position,
            text=c.text,
            tags=c.tags,
        ),
        score=hit.score,
        relevance=hit.relevance,
        collection=hit.collection,
        rerank_score=hit.rerank_score or 0.0,
        reranked=hit.rerank_score is not None,
    )


def ask_response(event: api.AskEvent) -> gateway_pb2.AskResponse:
    if isinstance(event, api.Citations):
        return gateway_pb2.AskResponse(
            citations=gateway_pb2.Citations(citations=[citation(c) for c in event.citations])
        )
    if isinstance(event, api.Delta):
        return gateway_pb2.AskResponse(delta=event.text)
    t = event.timings
    return gateway_pb2.AskResponse(
        finished=gateway_pb2.AskFinished(
            finish_reason=FINISH_REASONS[event.finish_reason],
            usage=common_pb2.Usage(
                prompt_tokens=event.usage.prompt_tokens,
                completion_tokens=event.usage.completion_tokens,
            ),
            timings=gateway_pb2.StageTimings(
                embed_ms=t.embed_ms,
                retrieve_ms=t.retrieve_ms,
                prompt_ms=t.prompt_ms,
                time_to_first_token_ms=t.time_to_first_token_ms,
                generate_ms=t.generate_ms,
                total_ms=t.total_ms,
                rerank_ms=t.rerank_ms,
            ),
            abstained=event.abstained,
            abstain_reason=ABSTAIN_REASONS[event.abstain_reason],
            unknown_names=event.unknown_names,
            cited_indexes=event.cited_indexes,
            invalid_citations=event.invalid_citations,
            stopped_repeating=event.stopped_repeating,
            attributed_indexes=event.attributed_indexes,
        )
    )


def citation(c: api.Citation) -> gateway_pb2.Citation:
    chunk = c.hit.chunk
    return gateway_pb2.Citation(
        index=c.index,
        doc_id=chunk.doc_id,
        title=chunk.title,
        source=chunk.source,
        section=chunk.section,
        chunk_id=chunk.id,
        score=c.hit.score,
        collection=c.hit.collection,
        text=chunk.text,
        relevance=c.hit.relevance,
    )


def collection_message(c: CollectionInfo) -> gateway_pb2.CollectionInfo:
    message = gateway_pb2.CollectionInfo(
        name=c.name,
        model=common_pb2.ModelIdentity(
            id=c.model.id, revision=c.model.revision, dimension=c.model.dimension
        ),
        description=c.description,
        chunk_count=c.chunk_count,
        document_count=c.document_count,
    )
    if c.create_time_ms:
        message.create_time.FromMilliseconds(c.create_time_ms)
    if c.update_time_ms:
        message.update_time.FromMilliseconds(c.update_time_ms)
    return message


def document_message(d: DocumentInfo) -> gateway_pb2.DocumentInfo:
    message = gateway_pb2.DocumentInfo(
        doc_id=d.doc_id,
        title=d.title,
        source=d.source,
        doc_hash=d.doc_hash,
        chunk_count=d.chunk_count,
        tags=d.tags,
        metadata=d.metadata,
    )
    if d.index_time_ms:
        message.index_time.FromMilliseconds(d.index_time_ms)
    return message
