"""The HTTP API's own cost: the same call over HTTP/JSON and over gRPC, in turns.

Search (retrieval only, no generation) is the headline: its work is the same and
deterministic on both doors, so the difference is the HTTP path (FastAPI, pydantic,
JSON, uvicorn) against the gRPC servicer. A short answer (chat completion against
AskUnary, max_tokens 4, greedy) shows the same on the whole query path, where the
generator's time dominates and varies.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.harness import Bench, spread
from ragplane.v1 import gateway_pb2, gateway_pb2_grpc

QUESTION = "How do I roll back a bad deploy of ledger-api?"


async def run(bench: Bench) -> dict[str, Any]:
    stub = gateway_pb2_grpc.GatewayServiceStub(bench.channel("gateway"))
    base_url = f"http://{bench.layout.http_address()}/v1"
    headers = {"authorization": f"Bearer {bench.layout.api_key()}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=600, headers=headers) as client:

        async def grpc_search() -> float:
            started = time.perf_counter()
            await stub.Search(gateway_pb2.GatewayServiceSearchRequest(query=QUESTION), timeout=60)
            return (time.perf_counter() - started) * 1000

        async def http_search() -> float:
            started = time.perf_counter()
            reply = await client.post("/search", json={"query": QUESTION})
            reply.raise_for_status()
            return (time.perf_counter() - started) * 1000

        async def grpc_answer() -> float:
            started = time.perf_counter()
            await stub.AskUnary(
                gateway_pb2.AskUnaryRequest(
                    request=gateway_pb2.AskRequest(question=QUESTION, max_tokens=4)
                ),
                timeout=600,
            )
            return (time.perf_counter() - started) * 1000

        async def http_answer() -> float:
            started = time.perf_counter()
            reply = await client.post(
                "/chat/completions",
                json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4},
            )
            reply.raise_for_status()
            return (time.perf_counter() - started) * 1000

        for call in (grpc_search, http_search, grpc_answer, http_answer):  # warm-up
            await call()
        searches = await _paired(3 if bench.smoke else 60, grpc_search, http_search)
        answers = await _paired(2 if bench.smoke else 12, grpc_answer, http_answer)
    return {
        "what": "the same call over HTTP and over gRPC, alternated: Search, and a 4-token answer",
        "target": "HTTP's own overhead over gRPC small against the call (reported, no target)",
        "search": searches,
        "answer": answers,
        "http_overhead_ms_p50_search": searches["overhead_ms"]["median"],
        "http_overhead_ms_p50_answer": answers["overhead_ms"]["median"],
    }


async def _paired(
    runs: int, grpc_call: Callable[[], Awaitable[float]], http_call: Callable[[], Awaitable[float]]
) -> dict[str, Any]:
    """Both doors in turns (gRPC, HTTP, gRPC, ...) so drift hits both: each one's spread,
    and per pair the ratio and HTTP's extra milliseconds."""
    grpc_ms, http_ms = [], []
    for _ in range(runs):
        grpc_ms.append(await grpc_call())
        http_ms.append(await http_call())
    return {
        "grpc_ms": spread(grpc_ms),
        "http_ms": spread(http_ms),
        "ratio": spread([h / g for g, h in zip(grpc_ms, http_ms, strict=True)]),
        "overhead_ms": spread([h - g for g, h in zip(grpc_ms, http_ms, strict=True)]),
    }
