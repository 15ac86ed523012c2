"""The query pipeline: embed the question, retrieve, fit the prompt, stream the answer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from opentelemetry import trace

from ragplane.errors import InvalidArgument, Unavailable
from ragplane.gateway import metrics
from ragplane.gateway.clients import Backends, Timeouts, deadline
from ragplane.gateway.grounding import lookup_request, missing_terms, unknown_terms
from ragplane.gateway.prompt import DONT_KNOW, FittedPrompt, fit_prompt
from ragplane.telemetry import tracer
from ragplane.v1 import common_pb2, embedder_pb2, gateway_pb2, generator_pb2, retriever_pb2

MAX_QUESTION_CHARS = 4000
MAX_TOP_K = 50
# Chunks given to the model unless the request says (RAGPLANE_GATEWAY_TOP_K).
DEFAULT_TOP_K = 3


@dataclass(frozen=True)
class QuerySettings:
    top_k: int
    max_tokens: int
    mode: int  # common_pb2.SearchMode
    # Query-chunk cosine similarity below which nothing retrieved counts as relevant.
    min_relevance: float
    # Abstain when the question names something (see grounding.py) no hit mentions.
    check_names: bool = True


class QueryPipeline:
    def __init__(self, backends: Backends, timeouts: Timeouts, settings: QuerySettings) -> None:
        self._backends = backends
        self._timeouts = timeouts
        self._settings = settings

    async def ask(
        self,
        collection: str,
        request: gateway_pb2.AskRequest,
        context: grpc.aio.ServicerContext | None = None,
    ) -> AsyncIterator[gateway_pb2.AskResponse]:
        """Citations first, then answer deltas, then one finished event."""
        started = time.perf_counter()
        question, top_k, max_tokens = self._validate(request)
        timings = gateway_pb2.StageTimings()
        mode = request.mode or self._settings.mode

        with _stage("embed", timings):
            embedded = await self._backends.embedder.Embed(
                embedder_pb2.EmbedRequest(texts=[question]),
                timeout=deadline(context, self._timeouts.embed),
            )
        with _stage("retrieve", timings) as span:
            span.set_attributes({"ragplane.collection": collection, "ragplane.top_k": top_k})
            found = await self._backends.retriever.Search(
                retriever_pb2.SearchRequest(
                    collection=collection,
                    model=embedded.model,
                    query_vector=embedded.embeddings[0].values,
                    query_text=question,
                    mode=mode,
                    filter=request.filter,
                    top_k=top_k,
                    fusion=request.fusion,
                    rerank=request.rerank,
                    extra_collections=request.extra_collections,
                    identifier_boost=request.identifier_boost,
                ),
                timeout=deadline(context, self._timeouts.retrieve),
            )
            timings.rerank_ms = found.rerank_ms
            relevant, missing = self._relevant(question, found.hits)
            if missing:

                async def search_corpus(text: str) -> list[common_pb2.ScoredChunk]:
                    reply = await self._backends.retriever.Search(
                        lookup_request(
                            collection,
                            embedded.model,
                            text,
                            request.filter,
                            request.extra_collections,
                        ),
                        timeout=deadline(context, self._timeouts.retrieve),
                    )
                    return list(reply.hits)

                missing = await unknown_terms(missing, search_corpus)
            if missing:
                relevant = []
            span.set_attributes(
                {
                    "ragplane.hits": len(found.hits),
                    "ragplane.relevant": len(relevant),
                    "ragplane.missing_names": missing,
                }
            )
        if not relevant:
            metrics.ANSWERS.labels("abstained").inc()
            yield gateway_pb2.AskResponse(citations=gateway_pb2.Citations())
            yield gateway_pb2.AskResponse(delta=DONT_KNOW)
            timings.total_ms = _ms_since(started)
            yield _finished(common_pb2.FINISH_REASON_STOP, common_pb2.Usage(), timings, True)
            return

        with _stage("prompt", timings) as span:
            fitted = await self._fit(question, relevant, max_tokens, context)
            span.set_attributes(
                {
                    "ragplane.context_chunks": len(fitted.context),
                    "ragplane.prompt_tokens": fitted.prompt_tokens,
                }
            )
        metrics.CITATIONS_PER_ANSWER.observe(len(fitted.context))
        yield gateway_pb2.AskResponse(citations=_citations(fitted))

        first_token, done = True, None
        with _stage("generate", timings) as span:
            stream = self._backends.generator.Generate(
                generator_pb2.GenerateRequest(
                    messages=fitted.messages, max_tokens=max_tokens, temperature=0.0
                ),
                timeout=deadline(context, self._timeouts.generate),
            )
            async for event in stream:
                if event.HasField("finished"):
                    done = event.finished
                    timings.time_to_first_token_ms = done.time_to_first_token_ms
                    span.set_attributes(
                        {
                            "ragplane.prompt_tokens": done.usage.prompt_tokens,
                            "ragplane.completion_tokens": done.usage.completion_tokens,
                            "ragplane.time_to_first_token_ms": done.time_to_first_token_ms,
                        }
                    )
                elif event.delta:
                    if first_token:
                        metrics.ASK_TIME_TO_FIRST_TOKEN.observe(time.perf_counter() - started)
                        first_token = False
                    yield gateway_pb2.AskResponse(delta=event.delta)
        if done is None:
            raise Unavailable("the generator's stream ended without a finished event")
        timings.total_ms = _ms_since(started)
        metrics.ANSWERS.labels("answered").inc()
        metrics.ASK_DURATION.observe(timings.total_ms / 1000)
        yield _finished(done.finish_reason, done.usage, timings, False)

    def _validate(self, request: gateway_pb2.AskRequest) -> tuple[str, int, int]:
        question = request.question.strip()
        if not question:
            raise InvalidArgument("question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise InvalidArgument(
                f"question is {len(question)} characters; the limit is {MAX_QUESTION_CHARS}"
            )
        top_k = request.top_k or self._settings.top_k
        if top_k > MAX_TOP_K:
            raise InvalidArgument(f"top_k is {top_k}; the limit is {MAX_TOP_K}")
        return question, top_k, request.max_tokens or self._settings.max_tokens

    def _relevant(
        self, question: str, hits: Sequence[common_pb2.ScoredChunk]
    ) -> tuple[list[common_pb2.ScoredChunk], list[str]]:
        """All hits, in rank order, if the best is relevant enough; none otherwise. Also the
        names in the question that no hit mentions, to be looked up in the corpus.

        Relevance is the query-chunk cosine whatever the mode: one calibrated scale. A
        question whose best chunk is below it is one the corpus does not answer, and the
        generator is not asked (a small model answers anyway, from junk). Nor is it asked
        when the question names something neither the hits nor the rest of the corpus
        mentions (grounding.py).
        """
        if not hits or max(h.relevance for h in hits) < self._settings.min_relevance:
            return [], []
        missing = missing_terms(question, hits) if self._settings.check_names else []
        return list(hits), missing

    async def _fit(
        self, question: str, hits: list[common_pb2.ScoredChunk], max_tokens: int, context
    ) -> FittedPrompt:
        info = await self._backends.generator.Info(
            generator_pb2.GeneratorServiceInfoRequest(),
            timeout=deadline(context, self._timeouts.generate),
        )
        budget = info.max_model_len - max_tokens
        if budget <= 0:
            raise InvalidArgument(
                f"max_tokens {max_tokens} leaves no room for a prompt in the generator's "
                f"{info.max_model_len}-token context"
            )

        async def count(texts, messages):
            reply = await self._backends.generator.CountPromptTokens(
                generator_pb2.CountPromptTokensRequest(texts=texts, messages=messages),
                timeout=deadline(context, self._timeouts.generate),
            )
            return list(reply.token_counts), reply.messages_tokens

        fitted = await fit_prompt(question, hits, budget, count)
        if fitted.prompt_tokens > budget:
            raise InvalidArgument(
                f"the question alone takes {fitted.prompt_tokens} prompt tokens; with "
                f"max_tokens {max_tokens} the generator's context of {info.max_model_len} is full"
            )
        return fitted


def _citations(fitted: FittedPrompt) -> gateway_pb2.Citations:
    return gateway_pb2.Citations(
        citations=[
            gateway_pb2.Citation(
                index=i + 1,
                doc_id=hit.chunk.doc_id,
                title=hit.chunk.title,
                source=hit.chunk.source,
                section=hit.chunk.section,
                chunk_id=hit.chunk.id,
                score=hit.score,
                collection=hit.collection,
            )
            for i, hit in enumerate(fitted.context)
        ]
    )


def _finished(
    reason: int, usage: common_pb2.Usage, timings: gateway_pb2.StageTimings, abstained: bool
) -> gateway_pb2.AskResponse:
    return gateway_pb2.AskResponse(
        finished=gateway_pb2.AskFinished(
            finish_reason=reason, usage=usage, timings=timings, abstained=abstained
        )
    )


@contextmanager
def _stage(name: str, timings: gateway_pb2.StageTimings) -> Iterator[trace.Span]:
    """A span, a latency sample and a StageTimings field for one query stage."""
    started = time.perf_counter()
    with tracer.start_as_current_span(name) as span:
        yield span
    elapsed = time.perf_counter() - started
    metrics.ASK_STAGE_DURATION.labels(name).observe(elapsed)
    setattr(timings, f"{name}_ms", elapsed * 1000)


def _ms_since(t: float) -> float:
    return (time.perf_counter() - t) * 1000
