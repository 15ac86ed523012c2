"""Retriever service vs a direct pymilvus call with the same query on the same Milvus."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pymilvus import AnnSearchRequest, MilvusClient, RRFRanker

from bench.harness import Bench, Stopwatch, percentile, spread
from ragplane.gateway.tenancy import stored_name
from ragplane.keys import LOCAL_TENANT
from ragplane.retriever.schema import CHUNK_FIELDS
from ragplane.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    retriever_pb2,
    retriever_pb2_grpc,
)

# What the service fetches: the chunk, its tags, and in keyword and hybrid modes the
# chunk's vector (for the query-chunk relevance every hit carries). The direct call
# fetches the same, so the comparison is of the service, not of what it returns.
FIELDS = [*CHUNK_FIELDS, "tags"]
RERANK_CANDIDATES = 10
SEARCH_MODES = {
    "dense": common_pb2.SEARCH_MODE_DENSE,
    "keyword": common_pb2.SEARCH_MODE_KEYWORD,
    "hybrid": common_pb2.SEARCH_MODE_HYBRID,
}

QUESTIONS = [
    "How do I roll back a bad deploy?",
    "max_wal_senders after failover",
    "What is the recovery point objective?",
    "error LEDG-5012 connection pool",
    "who owns ledger-api",
    "how often are database passwords rotated",
    "--legacy-auth replacement",
    "on-call handoff time",
]


async def run(bench: Bench, collection: str = "default") -> dict[str, Any]:
    # `collection` as the gateway indexed it for the bench's key (the local tenant's):
    # both paths here look behind the gateway, at the name the retriever stores.
    collection = stored_name(LOCAL_TENANT, collection)
    embedder = embedder_pb2_grpc.EmbedderServiceStub(bench.channel("embedder"))
    retriever = retriever_pb2_grpc.RetrieverServiceStub(bench.channel("retriever"))
    embedded = await embedder.Embed(embedder_pb2.EmbedRequest(texts=QUESTIONS), timeout=60)
    vectors = [list(e.values) for e in embedded.embeddings]
    client = MilvusClient(uri=f"http://{bench.layout.address('milvus')}")
    top_k, rounds = 5, (2 if bench.smoke else 10)
    scorer = _scorer(bench.layout.state_dir)

    def direct(mode: str, i: int) -> None:
        rerank = mode.endswith("+rerank")
        limit = RERANK_CANDIDATES if rerank else top_k
        fields = FIELDS if mode == "dense" else [*FIELDS, "dense"]
        # In hybrid mode each side brings 3x the candidates (at least 20), as the service.
        side = max(limit * 3, 20) if mode.startswith("hybrid") else limit
        dense = AnnSearchRequest(
            data=[vectors[i]], anns_field="dense", param={"metric_type": "COSINE"}, limit=side
        )
        sparse = AnnSearchRequest(
            data=[QUESTIONS[i]], anns_field="sparse", param={"metric_type": "BM25"}, limit=side
        )
        if mode.startswith("hybrid"):
            hits = client.hybrid_search(
                collection,
                [dense, sparse],
                ranker=RRFRanker(60),
                limit=limit,
                output_fields=fields,
            )
        else:
            r = dense if mode == "dense" else sparse
            hits = client.search(
                collection, data=r.data, anns_field=r.anns_field, search_params=r.param,
                limit=limit, output_fields=fields,
            )  # fmt: skip
        if rerank:
            scores = scorer.score(QUESTIONS[i], [h["entity"]["text"] for h in hits[0]])
            sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:top_k]

    async def service(mode: str, i: int) -> None:
        rerank = mode.endswith("+rerank")
        await retriever.Search(
            retriever_pb2.SearchRequest(
                collection=collection,
                model=embedded.model,
                query_vector=vectors[i],
                query_text=QUESTIONS[i],
                mode=SEARCH_MODES[mode.removesuffix("+rerank")],
                top_k=top_k,
                rerank=common_pb2.Rerank(
                    mode=common_pb2.RERANK_MODE_ON if rerank else common_pb2.RERANK_MODE_OFF,
                    candidates=RERANK_CANDIDATES,
                ),
                # The boost is Milvus work the direct call does not do (a wider pool and,
                # in hybrid mode, a second search): off, so both sides ask Milvus the same.
                identifier_boost=common_pb2.IDENTIFIER_BOOST_OFF,
            ),
            timeout=120,
        )

    results: dict[str, Any] = {
        "what": "search latency (ms): retriever service vs direct pymilvus, sequential",
        "target": "the service adds < 1 ms at p50",
        "modes": {},
    }
    for mode in ("dense", "keyword", "hybrid", "hybrid+rerank"):
        base, ours = [], []
        # Reranking takes seconds per query on this CPU: fewer of them.
        questions = range(2 if bench.smoke else len(QUESTIONS))
        for _ in range(1 if mode.endswith("+rerank") else rounds):
            for i in questions if mode.endswith("+rerank") else range(len(QUESTIONS)):
                with Stopwatch() as w:
                    await asyncio.to_thread(direct, mode, i)
                base.append(w.seconds * 1000)
                with Stopwatch() as w:
                    await service(mode, i)
                ours.append(w.seconds * 1000)
        results["modes"][mode] = {
            "direct_p50_ms": percentile(base, 50),
            "direct_p99_ms": percentile(base, 99),
            "service_p50_ms": percentile(ours, 50),
            "service_p99_ms": percentile(ours, 99),
            "added_p50_ms": percentile(ours, 50) - percentile(base, 50),
            # Each query runs both ways back to back: the paired differences' median and
            # IQR are the service's own time with its spread.
            "added_ms_paired": spread([o - b for o, b in zip(ours, base, strict=True)]),
            "direct_qps": 1000 / (sum(base) / len(base)),
            "service_qps": 1000 / (sum(ours) / len(ours)),
            "queries": len(base),
        }
    client.close()
    results["reranker"] = (
        f"causal-lm (SmolLM2-135M query likelihood), {RERANK_CANDIDATES} candidates"
    )
    return results


def _scorer(state_dir: Path):
    """The same scorer the stack's retriever runs, in this process."""
    from ragplane.models import converted_smollm2
    from ragplane.retriever.rerank import QueryLikelihoodScorer

    folder = converted_smollm2(state_dir).path
    return QueryLikelihoodScorer(folder, max_passage_tokens=256, batch_size=8)
