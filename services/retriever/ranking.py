"""How the retriever orders what Milvus finds: one ranking from several collections',
the keyword side's best joined to a fused ranking, chunks naming the query's identifiers
first, and the plan for reranking the top candidates. Pure functions over hits."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ragplane.errors import FailedPrecondition
from ragplane.names import normal
from ragplane.retriever.rerank import RerankerSettings
from ragplane.retriever.store import RRF_K, Hit

# One ranking's hits, each with the collection it came from.
Ranking = list[tuple[str, Hit]]


class SearchMode(enum.Enum):
    """What a search ranks by; the value names it in messages, spans and metrics."""

    DENSE = "dense"
    KEYWORD = "keyword"
    HYBRID = "hybrid"

    @property
    def uses_vector(self) -> bool:
        return self is not SearchMode.KEYWORD

    @property
    def uses_text(self) -> bool:
        return self is not SearchMode.DENSE


@dataclass(frozen=True)
class RerankOptions:
    """What a request asks of the reranker: on, off or the server's default (None); 0
    candidates and weight 0 also mean the server's defaults."""

    on: bool | None = None
    candidates: int = 0
    weight: float = 0.0


@dataclass(frozen=True)
class RerankPlan:
    """Whether to rerank, how many candidates (N) to rescore for the top_k (K), and the
    weight of the reranker's order."""

    on: bool
    candidates: int
    weight: float


def plan_rerank(
    options: RerankOptions, top_k: int, settings: RerankerSettings, available: bool
) -> RerankPlan:
    """The request's options with the server's defaults filled in; reranking asked for
    of a retriever without a reranker is refused."""
    if options.on and not available:
        raise FailedPrecondition(
            "reranking was asked for, but this retriever runs without a reranker "
            "(RAGPLANE_RERANKER=none)"
        )
    on = settings.default_on and available if options.on is None else options.on
    candidates = max(options.candidates or settings.default_candidates, top_k)
    return RerankPlan(on, candidates, options.weight or settings.default_weight)


def merge(found: list[tuple[str, list[Hit]]], mode: SearchMode) -> Ranking:
    """One ranking from several collections' rankings. Cosine scores share one scale,
    so dense hits merge by score; BM25 and fused scores do not (each collection has its
    own statistics), so those merge by reciprocal rank."""
    if len(found) == 1:
        name, hits = found[0]
        return [(name, h) for h in hits]
    if mode is SearchMode.DENSE:
        pairs = [(name, h) for name, hits in found for h in hits]
        return sorted(pairs, key=lambda pair: -pair[1].score)
    fused = [
        (name, replace(h, score=1.0 / (RRF_K + rank + 1)))
        for name, hits in found
        for rank, h in enumerate(hits)
    ]
    return sorted(fused, key=lambda pair: -pair[1].score)


def union(fused: Ranking, extra: Ranking) -> Ranking:
    """The fused ranking, then the extra hits it lacks, scored as its last."""
    seen = {(name, hit.chunk.id) for name, hit in fused}
    floor = min((hit.score for _, hit in fused), default=0.0)
    return fused + [
        (name, replace(hit, score=floor)) for name, hit in extra if (name, hit.chunk.id) not in seen
    ]


def promote_mentions(
    ranked: Ranking, identifiers: list[str], strict_identifiers: list[str]
) -> Ranking:
    """The ranking with hits that mention more of the identifiers first, in their order
    otherwise: a chunk that does not name the error code or setting asked about is about
    something else, however close its words. Identifiers with an underscore or a digit
    count before hyphenated words, which are often plain English (read-write)."""
    strict = [normal(t) for t in strict_identifiers]
    compounds = [normal(t) for t in identifiers if t not in strict_identifiers]

    def mentioned(hit: Hit) -> tuple[int, int]:
        text = hit.chunk.named_text()
        return -sum(t in text for t in strict), -sum(t in text for t in compounds)

    return sorted(ranked, key=lambda pair: mentioned(pair[1]))


def relevance(hit: Hit, query: Sequence[float] | None, mode: SearchMode) -> float:
    """Cosine of query and chunk; the embedder's vectors are unit length."""
    if query is None:
        return 0.0
    if mode is SearchMode.DENSE:
        return hit.score
    assert hit.vector is not None, "keyword and hybrid searches fetch the chunk vectors"
    return float(
        np.dot(np.asarray(query, dtype=np.float32), np.asarray(hit.vector, dtype=np.float32))
    )
