"""The retriever's instruments, created in one place."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from ragplane.telemetry import LATENCY_BUCKETS

SEARCH_DURATION = Histogram(
    "ragplane_retriever_search_duration_seconds",
    "Time Milvus took to answer a search, by mode (dense, keyword, hybrid).",
    ["mode"],
    buckets=LATENCY_BUCKETS,
)
SEARCH_HITS = Histogram(
    "ragplane_retriever_search_hits",
    "Chunks returned per search; many zeros mean queries find nothing.",
    buckets=(0, 1, 2, 3, 5, 10, 20, 50, 100),
)
CHUNKS_WRITTEN = Counter("ragplane_retriever_chunks_written", "Chunks written by Upsert.")
CHUNKS_DELETED = Counter(
    "ragplane_retriever_chunks_deleted",
    "Chunks deleted: stale chunks replaced by Upsert, and DeleteDocument.",
)
RERANK_DURATION = Histogram(
    "ragplane_retriever_rerank_duration_seconds",
    "Time the reranker took to rescore one search's candidates.",
    buckets=LATENCY_BUCKETS,
)
