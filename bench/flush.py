"""Milvus Lite search over rows it has flushed vs rows it has not: why the retriever
flushes a collection's last writes once they go idle (RAGPLANE_MILVUS_FLUSH_IDLE_SECONDS).
Two collections of the same random rows on the stack's Milvus Lite, one flushed, searched
in turns with the same queries."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from pymilvus import MilvusClient

from bench.harness import Bench, spread

DIMENSION = 384


def measure(uri: str, rows: int, queries: int) -> dict[str, Any]:
    client = MilvusClient(uri=uri)
    rng = random.Random(0)
    data = [{"id": i, "vector": [rng.gauss(0, 1) for _ in range(DIMENSION)]} for i in range(rows)]
    names = {"unflushed": "bench_flush_unflushed", "flushed": "bench_flush_flushed"}
    try:
        for name in names.values():
            client.drop_collection(name)
            client.create_collection(name, dimension=DIMENSION, metric_type="COSINE")
            for start in range(0, rows, 500):
                client.insert(name, data[start : start + 500])
        client.flush(names["flushed"])
        times: dict[str, list[float]] = {"unflushed": [], "flushed": []}
        ratios = []
        for _ in range(queries):
            vector = [rng.gauss(0, 1) for _ in range(DIMENSION)]
            for kind, name in names.items():  # baseline first, then ours
                started = time.perf_counter()
                client.search(name, data=[vector], limit=20, output_fields=["id"])
                times[kind].append((time.perf_counter() - started) * 1000)
            ratios.append(times["flushed"][-1] / times["unflushed"][-1])
        return {
            "what": "Milvus Lite dense search: rows flushed (ours) vs the same rows unflushed",
            "rows": rows,
            "baseline": spread(times["unflushed"]),
            "ours": spread(times["flushed"]),
            "ratio": spread(ratios),
        }
    finally:
        for name in names.values():
            client.drop_collection(name)
        client.close()


async def run(bench: Bench) -> dict[str, Any]:
    rows, queries = (300, 5) if bench.smoke else (5000, 30)
    uri = f"http://{bench.layout.address('milvus')}"
    return await asyncio.to_thread(measure, uri, rows, queries)
