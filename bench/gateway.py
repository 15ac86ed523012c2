"""Gateway: end-to-end Ask latency vs the sum of the stages it calls, and throughput."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench.harness import Bench, Stopwatch, percentile, spread
from ragplane.v1 import gateway_pb2, gateway_pb2_grpc

QUESTION = "How do I roll back a bad deploy of ledger-api?"


async def ask(stub, max_tokens: int) -> tuple[float, float, gateway_pb2.AskFinished]:
    """Client-side seconds to the first answer text and to the end, and the finished event."""
    finished, first = gateway_pb2.AskFinished(), 0.0
    started = time.perf_counter()
    async for event in stub.Ask(
        gateway_pb2.AskRequest(question=QUESTION, max_tokens=max_tokens), timeout=600
    ):
        if event.HasField("finished"):
            finished = event.finished
        elif event.delta and not first:
            first = time.perf_counter() - started
    return first, time.perf_counter() - started, finished


async def ask_many(stub, max_tokens: int, asks: int, concurrency: int) -> None:
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            await ask(stub, max_tokens)

    await asyncio.gather(*(one() for _ in range(asks)))


async def run(bench: Bench) -> dict[str, Any]:
    stub = gateway_pb2_grpc.GatewayServiceStub(bench.channel("gateway"))
    max_tokens = 8 if bench.smoke else 32
    await ask(stub, max_tokens)  # warm-up
    own, totals, ttfts, client_ttfts = [], [], [], []
    for _ in range(2 if bench.smoke else 10):
        first, _, finished = await ask(stub, max_tokens)
        t = finished.timings
        stages = t.embed_ms + t.retrieve_ms + t.prompt_ms + t.generate_ms
        own.append(t.total_ms - stages)
        totals.append(t.total_ms)
        ttfts.append(t.time_to_first_token_ms)
        client_ttfts.append(first * 1000)
    throughput = {}
    for concurrency in (1, 2) if bench.smoke else (1, 8, 32):
        asks = concurrency
        with Stopwatch() as w:
            await ask_many(stub, max_tokens, asks, concurrency)
        throughput[str(concurrency)] = asks / w.seconds
    return {
        "what": "Ask: gateway's own time (total minus the stages it awaits) and throughput",
        "target": "gateway's own time < 5 ms at p50",
        "max_tokens": max_tokens,
        "gateway_own_ms_p50": statistics.median(own),
        "gateway_own_ms_p99": percentile(own, 99),
        "gateway_own_ms": spread(own),
        "ask_total_ms_p50": statistics.median(totals),
        "generator_ttft_ms_p50": statistics.median(ttfts),
        "client_ttft_ms_p50": statistics.median(client_ttfts),
        "asks_per_second_by_concurrency": throughput,
    }
