"""What the HTTP routes call: protocol requests become api.py queries for the query
pipeline, its results and events become protocol responses. The models and embeddings
routes go straight to the retriever and the embedder. No HTTP here, no logic of its own
beyond translating: the limits are the pipeline's, the errors errors.py's classes."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import AsyncIterator

from ragplane.errors import InvalidArgument, NotFound
from ragplane.gateway import api
from ragplane.gateway.clients import Backends, Deadline, Timeouts
from ragplane.gateway.http import protocol as p
from ragplane.gateway.query import QueryPipeline
from ragplane.v1 import embedder_pb2, retriever_pb2


class InvalidParam(InvalidArgument):
    """Bad input in one named request field (OpenAI's error `param`)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class ModelNotFound(NotFound):
    param = "model"
    error_code = "model_not_found"


class HttpServing:
    """The HTTP API over the same query pipeline and backends as the gRPC servicer."""

    def __init__(
        self,
        query: QueryPipeline,
        backends: Backends,
        timeouts: Timeouts,
        default_collection: str,
    ) -> None:
        self._query = query
        self._backends = backends
        self._timeouts = timeouts
        self._default_collection = default_collection

    def _collection(self, name: str | None) -> str:
        if name == p.DEFAULT_MODEL:
            name = ""
        return api.valid_collection(name or "", self._default_collection)

    async def chat(
        self, request: p.ChatCompletionRequest, budget: float | None
    ) -> p.ChatCompletion:
        """The whole answer in one chat.completion."""
        collection = self._collection(request.model)
        citations: list[api.Citation] = []
        parts: list[str] = []
        finished: api.Finished | None = None
        async for event in self._query.ask(ask_query(request, collection), budget):
            if isinstance(event, api.Citations):
                citations = event.citations
            elif isinstance(event, api.Delta):
                parts.append(event.text)
            else:
                finished = event
        assert finished is not None, "the pipeline ends every answer with Finished"
        return completion(_completion_id(), collection, "".join(parts), citations, finished)

    async def open_chat_stream(
        self, request: p.ChatCompletionRequest, budget: float | None
    ) -> AsyncIterator[p.ChatCompletionChunk]:
        """The answer as chunks. Retrieval runs before this returns, so that its errors
        (bad input, unknown collection, a service down) are the response's status rather
        than an event in a stream that already said 200."""
        collection = self._collection(request.model)
        events = aiter(self._query.ask(ask_query(request, collection), budget))
        first = await anext(events)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return _chunks(first, events, _completion_id(), collection, include_usage)

    async def search(self, request: p.SearchRequest, budget: float | None) -> p.SearchResponse:
        """Retrieval only: ranked hits and whether an answer would abstain on them."""
        collection = self._collection(request.collection)
        result = await self._query.search(search_query(request, collection), budget)
        return search_response(result)

    async def models(self, budget: float | None) -> p.ModelList:
        """The collections, as OpenAI lists models."""
        reply = await self._backends.retriever.ListCollections(
            retriever_pb2.ListCollectionsRequest(),
            timeout=Deadline(budget).timeout(self._timeouts.retrieve),
        )
        return p.ModelList(
            data=[
                p.ModelCard(
                    id=c.name,
                    embedding_model=c.model.id,
                    embedding_model_revision=c.model.revision,
                    dimension=c.model.dimension,
                    chunk_count=c.chunk_count,
                    default=c.name == self._default_collection,
                )
                for c in reply.collections
            ]
        )

    async def embeddings(
        self, request: p.EmbeddingRequest, budget: float | None
    ) -> p.EmbeddingResponse:
        """The embedder's vectors, from the one model the collections are made with; the
        usage is the embedder's own token count (its Tokenize RPC)."""
        texts = [request.input] if isinstance(request.input, str) else list(request.input)
        if not texts:
            raise InvalidParam("input is empty", "input")
        deadline = Deadline(budget)
        timeout = self._timeouts.embed
        if request.model not in (None, "", p.DEFAULT_MODEL):
            info = await self._backends.embedder.Info(
                embedder_pb2.EmbedderServiceInfoRequest(), timeout=deadline.timeout(timeout)
            )
            if request.model != info.model.id:
                raise ModelNotFound(
                    f"model {request.model!r} is not served here: the embedder runs "
                    f"{info.model.id!r}"
                )
        reply = await self._backends.embedder.Embed(
            embedder_pb2.EmbedRequest(texts=texts), timeout=deadline.timeout(timeout)
        )
        if request.dimensions is not None and request.dimensions != reply.model.dimension:
            raise InvalidParam(
                f"dimensions {request.dimensions}: {reply.model.id} gives "
                f"{reply.model.dimension} and vectors are not truncated",
                "dimensions",
            )
        counted = await self._backends.embedder.Tokenize(
            embedder_pb2.TokenizeRequest(texts=texts), timeout=deadline.timeout(timeout)
        )
        tokens = sum(counted.token_counts)
        return p.EmbeddingResponse(
            data=[
                p.Embedding(index=i, embedding=_encoded(list(e.values), request.encoding_format))
                for i, e in enumerate(reply.embeddings)
            ],
            model=reply.model.id,
            usage=p.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )


# ---- requests to api.py ----


def ask_query(request: p.ChatCompletionRequest, collection: str) -> api.AskQuery:
    """The last message is the question; the ones before it are the conversation so far.

    The gateway writes its own system prompt (answer from the context, cite it, say I
    don't know): a caller's system or developer message could undo that, so it is refused
    rather than silently dropped.
    """
    turns: list[api.Turn] = []
    for i, message in enumerate(request.messages):
        if message.role not in ("user", "assistant"):
            raise InvalidParam(
                f"messages[{i}] has role {message.role!r}: only user and assistant messages "
                "are taken (the gateway writes its own system prompt)",
                f"messages[{i}].role",
            )
        turns.append(api.Turn(message.role, message.text()))
    if turns[-1].role != "user":
        raise InvalidParam(
            "the last message must be the user's question", f"messages[{len(turns) - 1}].role"
        )
    stop = request.stop
    return api.AskQuery(
        question=turns[-1].content,
        retrieval=retrieval(request.ragplane, collection),
        max_tokens=request.max_completion_tokens or request.max_tokens or 0,
        temperature=request.temperature or 0.0,
        top_p=request.top_p or 0.0,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        history=tuple(turns[:-1]),
    )


def search_query(request: p.SearchRequest, collection: str) -> api.SearchQuery:
    return api.SearchQuery(
        query=request.query,
        retrieval=retrieval(request, collection),
        context_top_k=request.context_top_k or 0,
    )


def retrieval(options: p.RetrievalOptions | None, collection: str) -> api.Retrieval:
    o = options or p.RetrievalOptions()
    if isinstance(o.rerank, p.RerankOptions):
        rerank = api.Rerank(o.rerank.enabled, o.rerank.candidates, o.rerank.weight)
    else:
        rerank = api.Rerank(enabled=o.rerank)
    return api.Retrieval(
        collection=collection,
        extra_collections=tuple(o.collections),
        top_k=o.top_k or 0,
        mode=o.mode,
        filter=api.Filter(tuple(o.filter.doc_ids), o.filter.source_prefix, tuple(o.filter.tags)),
        fusion=api.Fusion(
            o.fusion.method, o.fusion.rrf_k, o.fusion.dense_weight, o.fusion.keyword_weight
        ),
        rerank=rerank,
        identifier_boost=o.identifier_boost,
    )


# ---- api.py results to responses ----


def completion(
    completion_id: str,
    collection: str,
    answer: str,
    citations: list[api.Citation],
    finished: api.Finished,
) -> p.ChatCompletion:
    return p.ChatCompletion(
        id=completion_id,
        created=int(time.time()),
        model=collection,
        choices=[
            p.Choice(
                message=p.AssistantMessage(content=answer), finish_reason=finished.finish_reason
            )
        ],
        usage=usage(finished.usage),
        citations=[citation(c) for c in citations],
        **outcome(finished),
    )


async def _chunks(
    first: api.AskEvent,
    events: AsyncIterator[api.AskEvent],
    completion_id: str,
    collection: str,
    include_usage: bool,
) -> AsyncIterator[p.ChatCompletionChunk]:
    created = int(time.time())

    def chunk(choices: list[p.ChunkChoice], **fields) -> p.ChatCompletionChunk:
        return p.ChatCompletionChunk(
            id=completion_id, created=created, model=collection, choices=choices, **fields
        )

    try:
        cited = first.citations if isinstance(first, api.Citations) else []
        yield chunk(
            [p.ChunkChoice(delta=p.ChunkDelta(role="assistant", content=""))],
            citations=[citation(c) for c in cited],
        )
        async for event in events:
            if isinstance(event, api.Delta):
                yield chunk([p.ChunkChoice(delta=p.ChunkDelta(content=event.text))])
            elif isinstance(event, api.Finished):
                last = p.ChunkChoice(delta=p.ChunkDelta(), finish_reason=event.finish_reason)
                yield chunk([last], **outcome(event))
                if include_usage:
                    # OpenAI's usage chunk: no choices, after the finish reason.
                    yield chunk([], usage=usage(event.usage))
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def outcome(finished: api.Finished) -> dict:
    """ragplane's fields of a completion: abstention, the names, the rewritten query, the
    answer's [n] markers."""
    t = finished.timings
    return {
        "abstained": finished.abstained,
        "abstain_reason": finished.abstain_reason.value if finished.abstain_reason else None,
        "unknown_names": list(finished.unknown_names),
        "retrieval_query": finished.retrieval_query or None,
        "cited_indexes": list(finished.cited_indexes),
        "invalid_citations": list(finished.invalid_citations),
        "stopped_repeating": finished.stopped_repeating,
        "attributed_indexes": list(finished.attributed_indexes),
        "timings": p.Timings(
            embed_ms=t.embed_ms,
            retrieve_ms=t.retrieve_ms,
            rerank_ms=t.rerank_ms,
            prompt_ms=t.prompt_ms,
            time_to_first_token_ms=t.time_to_first_token_ms,
            generate_ms=t.generate_ms,
            total_ms=t.total_ms,
        ),
    }


def usage(u: api.Usage) -> p.Usage:
    return p.Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.prompt_tokens + u.completion_tokens,
    )


def citation(c: api.Citation) -> p.Citation:
    chunk = c.hit.chunk
    return p.Citation(
        index=c.index,
        doc_id=chunk.doc_id,
        title=chunk.title,
        source=chunk.source,
        section=chunk.section,
        chunk_id=chunk.id,
        collection=c.hit.collection,
        score=c.hit.score,
        relevance=c.hit.relevance,
        text=chunk.text,
    )


def search_response(result: api.SearchResult) -> p.SearchResponse:
    t = result.timings
    return p.SearchResponse(
        hits=[
            p.SearchHit(
                chunk_id=h.chunk.id,
                doc_id=h.chunk.doc_id,
                title=h.chunk.title,
                source=h.chunk.source,
                section=h.chunk.section,
                position=h.chunk.position,
                tags=list(h.chunk.tags),
                text=h.chunk.text,
                collection=h.collection,
                score=h.score,
                relevance=h.relevance,
                rerank_score=h.rerank_score,
            )
            for h in result.hits
        ],
        abstain_reason=result.abstain_reason.value if result.abstain_reason else None,
        unknown_names=list(result.unknown_names),
        timings=p.SearchTimings(
            embed_ms=t.embed_ms,
            retrieve_ms=t.retrieve_ms,
            rerank_ms=t.rerank_ms,
            total_ms=t.total_ms,
        ),
    )


def _encoded(values: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        # OpenAI's encoding: the float32 values, little-endian, base64.
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
