"""The query pipeline: embed the question, retrieve, decide whether to answer, fit the
prompt, stream the answer. Four calls for an answered question: Embed, Search (which
also checks the question's names), CountPromptTokens (every candidate prompt at once),
Generate. It takes and gives the transport-free types of api.py; the gRPC servicer and
the HTTP routes translate.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import TypeVar

from opentelemetry import trace

from ragplane.errors import InvalidArgument, Unavailable
from ragplane.gateway import api, metrics
from ragplane.gateway.admission import Admission, AdmissionSettings
from ragplane.gateway.attribution import Attributor
from ragplane.gateway.auth import caller_tenant
from ragplane.gateway.clients import Backends, Deadline, Timeouts
from ragplane.gateway.markers import check_markers
from ragplane.gateway.prompt import DONT_KNOW, FittedPrompt, fit_prompt
from ragplane.names import named_terms
from ragplane.telemetry import tracer
from ragplane.v1 import common_pb2, embedder_pb2, generator_pb2, retriever_pb2

E = TypeVar("E")

MAX_QUESTION_CHARS = 4000
MAX_TOP_K = 50
# Hits a retrieval-only search may return.
MAX_SEARCH_TOP_K = 100
# Chunks given to the model unless the request says (RAGPLANE_GATEWAY_TOP_K).
DEFAULT_TOP_K = 3
# Earlier user turns folded into a follow-up's retrieval query, and their length cap.
HISTORY_TURNS = 1
MAX_HISTORY_CHARS = 1000
# Earlier turns a request may carry.
MAX_HISTORY = 64
SEARCH_MODES = {
    "dense": common_pb2.SEARCH_MODE_DENSE,
    "keyword": common_pb2.SEARCH_MODE_KEYWORD,
    "hybrid": common_pb2.SEARCH_MODE_HYBRID,
}
FUSION_METHODS = {
    "rrf": common_pb2.FUSION_METHOD_RRF,
    "weighted": common_pb2.FUSION_METHOD_WEIGHTED,
}
FINISH_REASONS: dict[int, api.FinishReason] = {
    common_pb2.FINISH_REASON_STOP: "stop",
    common_pb2.FINISH_REASON_LENGTH: "length",
}


@dataclass(frozen=True)
class QuerySettings:
    top_k: int
    max_tokens: int
    mode: api.SearchMode
    # Query-chunk cosine similarity below which nothing retrieved counts as relevant.
    min_relevance: float
    # Abstain when the question names something (see ragplane.names) the corpus lacks.
    check_names: bool = True
    # Add [n] markers where a passage supports a sentence the model left unmarked
    # (attribution.py).
    attribute_citations: bool = True


@dataclass(frozen=True)
class _Retrieved:
    hits: list[api.Hit]
    unknown_names: list[str]
    abstain_reason: api.AbstainReason | None


class QueryPipeline:
    def __init__(
        self,
        backends: Backends,
        timeouts: Timeouts,
        settings: QuerySettings,
        default_collection: str,
        admission: Admission | None = None,
    ) -> None:
        self._backends = backends
        self._timeouts = timeouts
        self._settings = settings
        self._default_collection = default_collection
        self._admission = admission or Admission(AdmissionSettings(64, 1024))

    async def search(self, query: api.SearchQuery, budget: float | None) -> api.SearchResult:
        """Retrieval only: the hits an Ask would draw on, and whether it would abstain."""
        started = time.perf_counter()
        text = _checked_text(query.query, "query")
        top_k = _top_k(query.retrieval.top_k or self._settings.top_k, MAX_SEARCH_TOP_K)
        context_hits = _top_k(query.context_top_k or self._settings.top_k, MAX_TOP_K)
        timings = api.Timings()
        retrieved = await self._retrieve(
            text, text, query.retrieval, top_k, context_hits, Deadline(budget), timings
        )
        timings.total_ms = _ms_since(started)
        return api.SearchResult(
            retrieved.hits, retrieved.abstain_reason, retrieved.unknown_names, timings
        )

    async def ask(self, query: api.AskQuery, budget: float | None) -> AsyncIterator[api.AskEvent]:
        """Citations first, then answer deltas, then one finished event. Bad input is
        refused first, then admission control may refuse the ask at once
        (RESOURCE_EXHAUSTED with a retry hint), before any embedding or retrieval."""
        started = time.perf_counter()
        deadline = Deadline(budget)
        _checked_text(query.question, "question")
        _checked_history(query.history)
        _top_k(query.retrieval.top_k, MAX_TOP_K)
        # Queued by the caller's tenant, served in turn between tenants.
        async with self._admission.slot(caller_tenant(), deadline):
            async with aclosing(self._answer(query, deadline, started)) as events:
                async for event in events:
                    yield event

    async def _answer(
        self, query: api.AskQuery, deadline: Deadline, started: float
    ) -> AsyncGenerator[api.AskEvent, None]:
        question = _checked_text(query.question, "question")
        top_k = _top_k(query.retrieval.top_k or self._settings.top_k, MAX_TOP_K)
        max_tokens = query.max_tokens or self._settings.max_tokens
        retrieval_query = standalone_query(question, _checked_history(query.history))
        timings = api.Timings()

        retrieved = await self._retrieve(
            retrieval_query, question, query.retrieval, top_k, top_k, deadline, timings
        )
        if retrieved.abstain_reason is not None:
            metrics.ANSWERS.labels("abstained").inc()
            yield api.Citations([])
            yield api.Delta(DONT_KNOW)
            timings.total_ms = _ms_since(started)
            yield api.Finished(
                "stop",
                api.Usage(),
                timings,
                retrieved.abstain_reason,
                tuple(retrieved.unknown_names),
                _rewritten(retrieval_query, question),
            )
            return

        with _stage("prompt", timings) as span:
            fitted = await self._fit(question, retrieved.hits, max_tokens, deadline)
            span.set_attributes(
                {
                    "ragplane.context_chunks": len(fitted.context),
                    "ragplane.prompt_tokens": fitted.prompt_tokens,
                }
            )
        metrics.CITATIONS_PER_ANSWER.observe(len(fitted.context))
        yield api.Citations([api.Citation(i + 1, hit) for i, hit in enumerate(fitted.context)])

        done: generator_pb2.GenerateFinished | None = None
        answer: list[str] = []
        attributor = (
            Attributor(question, [hit.chunk.text for hit in fitted.context])
            if self._settings.attribute_citations
            else None
        )
        async for event in self._generate(query, fitted, max_tokens, deadline, timings, started):
            if isinstance(event, api.Delta):
                text = attributor.feed(event.text) if attributor else event.text
                if text:
                    answer.append(text)
                    yield api.Delta(text)
            else:
                done = event
        if done is None:
            raise Unavailable("the generator's stream ended without a finished event")
        if attributor and (tail := attributor.finish()):
            answer.append(tail)
            yield api.Delta(tail)
        timings.total_ms = _ms_since(started)
        metrics.ANSWERS.labels("answered").inc()
        metrics.ASK_DURATION.observe(timings.total_ms / 1000)
        # Over the whole answer: a marker may be split across deltas.
        marked = check_markers("".join(answer), len(fitted.context))
        yield api.Finished(
            FINISH_REASONS.get(done.finish_reason, "stop"),
            api.Usage(done.usage.prompt_tokens, done.usage.completion_tokens),
            timings,
            retrieval_query=_rewritten(retrieval_query, question),
            cited_indexes=marked.cited,
            invalid_citations=marked.invalid,
            stopped_repeating=done.stopped_repeating,
            attributed_indexes=tuple(attributor.attributed) if attributor else (),
        )

    async def _retrieve(
        self,
        text: str,
        question: str,
        retrieval: api.Retrieval,
        top_k: int,
        context_hits: int,
        deadline: Deadline,
        timings: api.Timings,
    ) -> _Retrieved:
        """Embed and search `text`; the names check reads `question`'s names against the
        first `context_hits` hits (and, where they miss one, the rest of the corpus)."""
        collection = retrieval.collection or self._default_collection
        with _stage("embed", timings):
            embedded = await self._backends.embedder.Embed(
                embedder_pb2.EmbedRequest(texts=[text]),
                timeout=deadline.timeout(self._timeouts.embed),
            )
        terms = named_terms(question) if self._settings.check_names else []
        with _stage("retrieve", timings) as span:
            span.set_attributes({"ragplane.collection": collection, "ragplane.top_k": top_k})
            request = _search_request(
                collection, retrieval, embedded, text, top_k, self._settings.mode
            )
            request.name_check.terms.extend(terms)
            request.name_check.context_hits = context_hits
            found = await self._backends.retriever.Search(
                request, timeout=deadline.timeout(self._timeouts.retrieve)
            )
            timings.rerank_ms = found.rerank_ms
            hits = [_hit(h) for h in found.hits]
            unknown = list(found.unknown_terms)
            reason = self._abstain_reason(hits[:context_hits], unknown)
            span.set_attributes(
                {
                    "ragplane.hits": len(hits),
                    "ragplane.unknown_names": unknown,
                    "ragplane.abstain_reason": reason.value if reason else "",
                }
            )
        return _Retrieved(hits, unknown, reason)

    def _abstain_reason(
        self, context: list[api.Hit], unknown_names: list[str]
    ) -> api.AbstainReason | None:
        """Why the generator is not asked, if it is not.

        Relevance is the query-chunk cosine whatever the mode: one calibrated scale. A
        question whose best chunk is below it is one the corpus does not answer (a small
        model answers anyway, from junk). Nor is the generator asked when the question
        names something neither the context nor the rest of the corpus mentions: the
        corpus is about the same topic, so such a question's best cosine is no lower than
        that of many answerable ones (docs/retrieval.md).
        """
        if not context:
            return api.AbstainReason.NO_HITS
        if max(h.relevance for h in context) < self._settings.min_relevance:
            return api.AbstainReason.LOW_RELEVANCE
        if unknown_names:
            return api.AbstainReason.UNKNOWN_NAMES
        return None

    async def _fit(
        self, question: str, hits: list[api.Hit], max_tokens: int, deadline: Deadline
    ) -> FittedPrompt:
        async def count(prompts):
            reply = await self._backends.generator.CountPromptTokens(
                generator_pb2.CountPromptTokensRequest(
                    prompts=[generator_pb2.Prompt(messages=m) for m in prompts]
                ),
                timeout=deadline.timeout(self._timeouts.generate),
            )
            return list(reply.prompt_tokens), reply.max_model_len

        fitted = await fit_prompt(question, hits, max_tokens, count)
        if fitted.prompt_tokens > fitted.budget_tokens:
            raise InvalidArgument(
                f"the question alone takes {fitted.prompt_tokens} prompt tokens; with "
                f"max_tokens {max_tokens} only {fitted.budget_tokens} are left in the "
                "generator's context"
            )
        return fitted

    async def _generate(
        self,
        query: api.AskQuery,
        fitted: FittedPrompt,
        max_tokens: int,
        deadline: Deadline,
        timings: api.Timings,
        started: float,
    ) -> AsyncIterator[api.Delta | generator_pb2.GenerateFinished]:
        first_token = True
        with _stage("generate", timings) as span:
            stream = self._backends.generator.Generate(
                generator_pb2.GenerateRequest(
                    messages=fitted.messages,
                    max_tokens=max_tokens,
                    temperature=query.temperature,
                    top_p=query.top_p,
                    stop=query.stop,
                ),
                timeout=deadline.timeout(self._timeouts.generate),
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
                    yield done
                elif event.delta:
                    if first_token:
                        metrics.ASK_TIME_TO_FIRST_TOKEN.observe(time.perf_counter() - started)
                        first_token = False
                    yield api.Delta(event.delta)


def standalone_query(question: str, history: tuple[api.Turn, ...]) -> str:
    """The retrieval query of a follow-up: the last earlier user turn, then the question.

    A follow-up ("and how do I undo that?") names nothing it refers to; the turn before it
    does. Prepending it keeps what the conversation is about in the query for both dense
    and keyword search; the names check still reads only the question itself.
    """
    earlier = [t.content.strip() for t in history if t.role == "user" and t.content.strip()]
    if not earlier:
        return question
    context = " ".join(earlier[-HISTORY_TURNS:])[-MAX_HISTORY_CHARS:]
    return f"{context} {question}"


def _checked_history(history: tuple[api.Turn, ...]) -> tuple[api.Turn, ...]:
    if len(history) > MAX_HISTORY:
        raise InvalidArgument(f"history has {len(history)} turns; the limit is {MAX_HISTORY}")
    for i, turn in enumerate(history):
        if turn.role not in ("user", "assistant"):
            raise InvalidArgument(f"history[{i}].role is {turn.role!r}; use user or assistant")
        if len(turn.content) > MAX_QUESTION_CHARS * 4:
            raise InvalidArgument(f"history[{i}] is over {MAX_QUESTION_CHARS * 4} characters")
    return history


def _rewritten(retrieval_query: str, question: str) -> str:
    return retrieval_query if retrieval_query != question else ""


def _checked_text(text: str, name: str) -> str:
    text = text.strip()
    if not text:
        raise InvalidArgument(f"{name} is empty")
    if len(text) > MAX_QUESTION_CHARS:
        raise InvalidArgument(
            f"{name} is {len(text)} characters; the limit is {MAX_QUESTION_CHARS}"
        )
    return text


def _top_k(top_k: int, limit: int) -> int:
    if top_k < 0 or top_k > limit:
        raise InvalidArgument(f"top_k is {top_k}; the limit is {limit}")
    return top_k


def _search_request(
    collection: str,
    retrieval: api.Retrieval,
    embedded: embedder_pb2.EmbedResponse,
    text: str,
    top_k: int,
    default_mode: api.SearchMode,
) -> retriever_pb2.SearchRequest:
    f, fusion, rerank = retrieval.filter, retrieval.fusion, retrieval.rerank
    return retriever_pb2.SearchRequest(
        collection=collection,
        model=embedded.model,
        query_vector=embedded.embeddings[0].values,
        query_text=text,
        mode=SEARCH_MODES[retrieval.mode or default_mode],
        filter=common_pb2.MetadataFilter(
            doc_ids=f.doc_ids, source_prefix=f.source_prefix, tags=f.tags
        ),
        top_k=top_k,
        fusion=common_pb2.Fusion(
            method=(
                FUSION_METHODS[fusion.method]
                if fusion.method
                else common_pb2.FUSION_METHOD_UNSPECIFIED
            ),
            rrf_k=fusion.rrf_k,
            dense_weight=fusion.dense_weight,
            keyword_weight=fusion.keyword_weight,
        ),
        rerank=common_pb2.Rerank(
            mode=_tristate(
                rerank.enabled,
                common_pb2.RERANK_MODE_UNSPECIFIED,
                common_pb2.RERANK_MODE_ON,
                common_pb2.RERANK_MODE_OFF,
            ),
            candidates=rerank.candidates,
            weight=rerank.weight,
        ),
        extra_collections=retrieval.extra_collections,
        identifier_boost=_tristate(
            retrieval.identifier_boost,
            common_pb2.IDENTIFIER_BOOST_UNSPECIFIED,
            common_pb2.IDENTIFIER_BOOST_ON,
            common_pb2.IDENTIFIER_BOOST_OFF,
        ),
    )


def _tristate(value: bool | None, unset: E, on: E, off: E) -> E:
    return unset if value is None else on if value else off


def _hit(hit: common_pb2.ScoredChunk) -> api.Hit:
    c = hit.chunk
    return api.Hit(
        chunk=api.StoredChunk(
            id=c.id,
            doc_id=c.doc_id,
            title=c.title,
            source=c.source,
            section=c.section,
            position=c.position,
            text=c.text,
            tags=tuple(c.tags),
        ),
        collection=hit.collection,
        score=hit.score,
        relevance=hit.relevance,
        rerank_score=hit.rerank_score if hit.reranked else None,
    )


@contextmanager
def _stage(name: str, timings: api.Timings) -> Iterator[trace.Span]:
    """A span, a latency sample and a Timings field for one query stage."""
    started = time.perf_counter()
    with tracer.start_as_current_span(name) as span:
        yield span
    elapsed = time.perf_counter() - started
    metrics.ASK_STAGE_DURATION.labels(name).observe(elapsed)
    setattr(timings, f"{name}_ms", elapsed * 1000)


def _ms_since(t: float) -> float:
    return (time.perf_counter() - t) * 1000
