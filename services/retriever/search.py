"""Search: dense, keyword (BM25) or hybrid over one or more collections, chunks naming
the query's identifiers first, the top candidates optionally reranked, and the names
check of what the hits do not mention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry import trace

from ragplane.errors import FailedPrecondition
from ragplane.names import identifier_terms
from ragplane.retriever import metrics, names_check, validation
from ragplane.retriever.catalog import Catalog
from ragplane.retriever.ranking import (
    Ranking,
    SearchMode,
    merge,
    promote_mentions,
    relevance,
    union,
)
from ragplane.retriever.rerank import Reranker, rerank_order
from ragplane.retriever.schema import StoredChunk
from ragplane.retriever.store import Fusion, Hit, MilvusStore, ModelRecord
from ragplane.retriever.validation import NameCheck, SearchDefaults, SearchQuery
from ragplane.telemetry import tracer

# With the identifier boost, candidates fetched per result wanted (at least
# IDENTIFIER_POOL): the chunk that names the identifier often ranks below the cut.
IDENTIFIER_POOL_FACTOR = 2
IDENTIFIER_POOL = 20


@dataclass(frozen=True)
class SearchHit:
    """One chunk found: its score in the search's ranking, its query-chunk cosine, and
    the reranker's score when it was reranked."""

    collection: str
    chunk: StoredChunk
    score: float
    relevance: float
    rerank_score: float | None = None


@dataclass
class SearchResult:
    """A search's hits, what it took, and the names of its name check no chunk knows."""

    hits: list[SearchHit]
    # Time from the first Milvus search to the end, and the reranker's share of it.
    compute_ms: float = 0.0
    rerank_ms: float = 0.0
    # The reranker that scored the hits; "" when they were not reranked.
    reranker: str = ""
    unknown_terms: list[str] = field(default_factory=list)


class Searcher:
    """Runs searches against the store, ranks and reranks what it finds."""

    def __init__(
        self,
        store: MilvusStore,
        catalog: Catalog,
        reranker: Reranker,
        fusion: Fusion,
        model_cache_s: float,
        identifier_boost: bool = True,
        plain_fusion: Fusion | None = None,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._reranker = reranker
        self._model_cache_s = model_cache_s
        self.defaults = SearchDefaults(
            fusion=fusion,
            identifier_boost=identifier_boost,
            reranker=reranker.settings,
            reranker_available=reranker.available,
            plain_fusion=plain_fusion,
        )

    async def search(self, query: SearchQuery) -> SearchResult:
        """The query's top_k hits, ranked, reranked where the query's plan says so, and
        the names of its name check the corpus does not know."""
        model = await self._shared_model(query)
        vector = (
            validation.vector(query.vector, model.dimension, "query_vector")
            if query.vector
            else None
        )
        started = time.perf_counter()
        wanted = query.rerank.candidates if query.rerank.on else query.top_k
        merged = await self._candidates(
            query.collections,
            query.mode,
            wanted,
            vector,
            query.text,
            query.filter,
            query.fusion,
            query.identifier_boost,
        )
        if query.rerank.on and merged:
            result = await self._reranked(query, merged, vector)
        else:
            top = merged[: query.top_k]
            result = SearchResult([_hit(name, hit, vector, query.mode) for name, hit in top])
        metrics.SEARCH_HITS.observe(len(result.hits))
        if query.name_check is not None:
            result.unknown_terms = await self._unknown_names(query, query.name_check, result.hits)
        result.compute_ms = (time.perf_counter() - started) * 1000
        return result

    async def _shared_model(self, query: SearchQuery) -> ModelRecord:
        """The one model every searched collection is bound to (and the query's, when it
        names one); a tag filter also needs every collection to have tags."""
        model = None
        names = query.collections
        for name in names:
            if query.model is not None:
                bound = await self._catalog.bound_model(
                    name, query.model, "query", self._model_cache_s
                )
            else:
                bound = await self._store.model_of(name, self._model_cache_s)
            if model is not None and not model.matches(bound):
                raise FailedPrecondition(
                    f"collections '{names[0]}' ({model.label()}) and '{name}' "
                    f"({bound.label()}) hold vectors of different models; search them apart"
                )
            model = bound
            if query.filter_tags and not await self._store.has_tags(name):
                raise FailedPrecondition(
                    f"collection '{name}' was created before tags existed; it cannot be "
                    "filtered by tags (re-index it into a new collection)"
                )
        assert model is not None
        return model

    async def _candidates(
        self,
        names: list[str],
        mode: SearchMode,
        wanted: int,
        vector: list[float] | None,
        text: str | None,
        expr: str,
        fusion: Fusion,
        boost: bool,
    ) -> Ranking:
        """The collections' chunks in one ranking; with the identifier boost, a deeper
        pool with the chunks naming the text's identifiers first, cut to `wanted`."""
        identifiers = identifier_terms(text) if boost and text and mode.uses_text else []
        limit = max(wanted * IDENTIFIER_POOL_FACTOR, IDENTIFIER_POOL) if identifiers else wanted
        searches = [self._ranked(names, mode, limit, vector, text, expr, fusion)]
        if identifiers and mode is SearchMode.HYBRID:
            # Fusion ranks a chunk that only BM25 finds below the chunks both sides find,
            # so the chunk naming the identifier can miss the fused pool: BM25's own best
            # join it, as many as the fused pool. (A request for 3 still fuses shallower
            # lists than one for 20, so their top hits can differ; docs/retrieval.md.)
            keyword = SearchMode.KEYWORD
            searches.append(self._ranked(names, keyword, limit, vector, text, expr, fusion))
        ranked = await asyncio.gather(*searches)
        merged = union(ranked[0], ranked[1]) if len(ranked) > 1 else ranked[0]
        if identifiers:
            trace.get_current_span().set_attribute("ragplane.identifiers", identifiers)
            strict = identifier_terms(text, compounds=False) if text else []
            merged = promote_mentions(merged, identifiers, strict)[:wanted]
        return merged

    async def _ranked(
        self,
        names: list[str],
        mode: SearchMode,
        limit: int,
        vector: list[float] | None,
        text: str | None,
        expr: str,
        fusion: Fusion,
    ) -> Ranking:
        """One ranking of the collections' chunks in a mode."""
        found = await asyncio.gather(
            *(
                self._milvus_search(
                    name,
                    mode,
                    limit,
                    vector if mode.uses_vector else None,
                    text if mode.uses_text else None,
                    expr,
                    vector,
                    fusion,
                )
                for name in names
            )
        )
        return merge(list(zip(names, found, strict=True)), mode)

    async def _milvus_search(
        self,
        name: str,
        mode: SearchMode,
        limit: int,
        vector: list[float] | None,
        text: str | None,
        expr: str,
        relevance_to: list[float] | None,
        fusion: Fusion,
    ) -> list[Hit]:
        started = time.perf_counter()
        with tracer.start_as_current_span("milvus search") as span:
            span.set_attributes(
                {"ragplane.collection": name, "ragplane.mode": mode.value, "ragplane.limit": limit}
            )
            # Dense scores are the cosine already; other modes fetch the chunk vectors.
            hits = await self._store.search(
                name,
                vector=vector,
                text=text,
                filter_expr=expr,
                limit=limit,
                with_vectors=relevance_to is not None and mode is not SearchMode.DENSE,
                fusion=fusion,
                with_tags=await self._store.has_tags(name),
            )
            span.set_attribute("ragplane.hits", len(hits))
        metrics.SEARCH_DURATION.labels(mode.value).observe(time.perf_counter() - started)
        return hits

    async def _reranked(
        self, query: SearchQuery, candidates: Ranking, vector: list[float] | None
    ) -> SearchResult:
        """The top_k of the candidates in the reranker's order, weighed against theirs."""
        assert query.text is not None
        started = time.perf_counter()
        with tracer.start_as_current_span("rerank") as span:
            span.set_attributes(
                {"ragplane.reranker": self._reranker.label, "ragplane.candidates": len(candidates)}
            )
            passages = [hit.chunk.text for _, hit in candidates]
            scores = await self._reranker.score(query.text, passages)
        elapsed = time.perf_counter() - started
        metrics.RERANK_DURATION.observe(elapsed)
        order = rerank_order(scores, query.rerank.weight)
        chosen = [(candidates[i], scores[i]) for i in order[: query.top_k]]
        return SearchResult(
            [_hit(name, hit, vector, query.mode, score) for (name, hit), score in chosen],
            rerank_ms=elapsed * 1000,
            reranker=self._reranker.label,
        )

    async def _unknown_names(
        self, query: SearchQuery, check: NameCheck, hits: Sequence[SearchHit]
    ) -> list[str]:
        """The name check: terms the first context_hits hits miss are looked up with
        keyword searches of the same collections under the same filter, never reranked."""
        context = hits[: check.context_hits] if check.context_hits else hits

        async def lookup(text: str) -> list[StoredChunk]:
            found = await self._candidates(
                query.collections,
                SearchMode.KEYWORD,
                names_check.LOOKUP_HITS,
                None,
                text,
                query.filter,
                self.defaults.fusion,
                self.defaults.identifier_boost,
            )
            return [hit.chunk for _, hit in found[: names_check.LOOKUP_HITS]]

        with tracer.start_as_current_span("names check") as span:
            unknown = await names_check.unknown_names(
                check.terms, [h.chunk for h in context], lookup
            )
            span.set_attributes({"ragplane.names": check.terms, "ragplane.unknown_names": unknown})
        return unknown


def _hit(
    collection: str,
    hit: Hit,
    query: list[float] | None,
    mode: SearchMode,
    rerank_score: float | None = None,
) -> SearchHit:
    return SearchHit(
        collection=collection,
        chunk=hit.chunk,
        score=hit.score,
        relevance=relevance(hit, query, mode),
        rerank_score=rerank_score,
    )
