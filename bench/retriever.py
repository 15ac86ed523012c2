"""Retriever service vs a direct pymilvus call with the same query on the same Milvus."""

from __future__ import annotations

import asyncio
from typing import Any

from pymilvus import AnnSearchRequest, MilvusClient, RRFRanker

from bench.harness import Bench, Stopwatch, percentile
from ragplane.retriever.store import CHUNK_FIELDS
from ragplane.v1 import (
    embedder_pb2,
    embedder_pb2_grpc,
    retriever_pb2,
    retriever_pb2_grpc,
)

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
    embedder = embedder_pb2_grpc.EmbedderServiceStub(bench.channel("embedder"))
    retriever = retriever_pb2_grpc.RetrieverServiceStub(bench.channel("retriever"))
    embedded = await embedder.Embed(embedder_pb2.EmbedRequest(texts=QUESTIONS), timeout=60)
    vectors = [list(e.values) for e in embedded.embeddings]
    client = MilvusClient(uri=f"http://{bench.layout.address('milvus')}")
    top_k, rounds = 5, (2 if bench.smoke else 10)

    def direct(mode: str, i: int) -> None:
        dense = AnnSearchRequest(
            data=[vectors[i]], anns_field="dense", param={"metric_type": "COSINE"}, limit=top_k
        )
        sparse = AnnSearchRequest(
            data=[QUESTIONS[i]], anns_field="sparse", param={"metric_type": "BM25"}, limit=top_k
        )
        if mode == "hybrid":
            client.hybrid_search(
                collection,
                [dense, sparse],
                ranker=RRFRanker(60),
                limit=top_k,
                output_fields=CHUNK_FIELDS,
            )
        else:
            r = dense if mode == "dense" else sparse
            client.search(
                collection, data=r.data, anns_field=r.anns_field, search_params=r.param,
                limit=top_k, output_fields=CHUNK_FIELDS,
            )  # fmt: skip

    async def service(mode: str, i: int) -> None:
        await retriever.Search(
            retriever_pb2.SearchRequest(
                collection=collection,
                model=embedded.model,
                query_vector=vectors[i],
                query_text=QUESTIONS[i],
                mode={"dense": 1, "keyword": 2, "hybrid": 3}[mode],
                top_k=top_k,
            ),
            timeout=60,
        )

    results: dict[str, Any] = {
        "what": "search latency (ms): retriever service vs direct pymilvus, sequential",
        "target": "the service adds < 1 ms at p50",
        "modes": {},
    }
    for mode in ("dense", "keyword", "hybrid"):
        base, ours = [], []
        for _ in range(rounds):
            for i in range(len(QUESTIONS)):  # interleaved: drift hits both sides
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
            "direct_qps": 1000 / (sum(base) / len(base)),
            "service_qps": 1000 / (sum(ours) / len(ours)),
            "queries": len(base),
        }
    client.close()
    return results
