"""Generator service vs vLLM's own OpenAI-compatible server on the same model: time to
first token and tokens/s, one stream and 16 concurrent streams."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import Bench, spread
from ragplane.generator import openai_server
from ragplane.models import converted_smollm2
from ragplane.ops.processes import free_port
from ragplane.v1 import generator_pb2, generator_pb2_grpc

# Alternating runs of each side per stream count; their ratios give the spread.
RUNS = 3
MESSAGES = [
    {"role": "system", "content": "Answer the question using only the context."},
    {
        "role": "user",
        "content": "Context:\n[1] The deploy freeze starts on Fridays at 15:00 UTC.\n\n"
        "Question: Write three sentences about the deploy freeze.",
    },
]


async def via_service(stub, max_tokens: int) -> tuple[float, int, float]:
    """(TTFT s, completion tokens, total s) as a gRPC client sees them."""
    started, first, tokens = time.perf_counter(), 0.0, 0
    request = generator_pb2.GenerateRequest(
        messages=[generator_pb2.ChatMessage(**m) for m in MESSAGES],
        max_tokens=max_tokens,
        temperature=0.0,
    )
    async for event in stub.Generate(request, timeout=600):
        if event.HasField("finished"):
            tokens = event.finished.usage.completion_tokens
        elif not first:
            first = time.perf_counter() - started
    return first, tokens, time.perf_counter() - started


async def via_openai(
    client: httpx.AsyncClient, model: str, max_tokens: int
) -> tuple[float, int, float]:
    started, first, tokens = time.perf_counter(), 0.0, 0
    body = {
        "model": model,
        "messages": MESSAGES,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream("POST", "/v1/chat/completions", json=body, timeout=600) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            elif event.get("choices") and event["choices"][0]["delta"].get("content") and not first:
                first = time.perf_counter() - started
    return first, tokens, time.perf_counter() - started


async def streams(call, count: int) -> dict[str, float]:
    started = time.perf_counter()
    results = await asyncio.gather(*(call() for _ in range(count)))
    wall = time.perf_counter() - started
    return {
        "ttft_ms_p50": statistics.median(r[0] for r in results) * 1000,
        "tokens_per_second": sum(r[1] for r in results) / wall,
    }


async def run(bench: Bench) -> dict[str, Any]:
    stub = generator_pb2_grpc.GeneratorServiceStub(bench.channel("generator"))
    max_tokens = 8 if bench.smoke else 128
    if bench.smoke:
        # The smoke run checks the service side only: a second engine costs a minute.
        single = await streams(lambda: via_service(stub, max_tokens), 1)
        return {"what": "generator service, one stream (smoke: no baseline)", "service": single}
    folder = await asyncio.to_thread(converted_smollm2, bench.layout.state_dir)
    port, logs = free_port(), Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    # vLLM's CPU build binds its threads to cores: the stack's engine runs on core 0
    # (bench.run sets that), the baseline on core 1, so neither slows the other.
    proc = openai_server.start(
        folder,
        port,
        bench.layout.state_dir,
        logs / "vllm.log",
        extra_env={"VLLM_CPU_OMP_THREADS_BIND": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await openai_server.wait_healthy(url, proc, logs / "vllm.log")
        results: dict[str, Any] = {
            "what": "TTFT and tokens/s: generator service vs vLLM's OpenAI server, same model",
            "target": "within 5 %",
            "max_tokens": max_tokens,
        }
        async with httpx.AsyncClient(base_url=url) as client:
            for count in (1, 16):
                runs: dict[str, list[dict[str, float]]] = {"service": [], "vllm_openai": []}
                await via_service(stub, 4)
                await via_openai(client, folder.id, 4)
                for _ in range(RUNS):  # alternating, so drift hits both
                    runs["service"].append(
                        await streams(lambda: via_service(stub, max_tokens), count)
                    )
                    runs["vllm_openai"].append(
                        await streams(lambda: via_openai(client, folder.id, max_tokens), count)
                    )
                results[f"{count}_streams"] = {
                    side: {
                        key: statistics.median(r[key] for r in measured)
                        for key in ("ttft_ms_p50", "tokens_per_second")
                    }
                    for side, measured in runs.items()
                }
                s, v = (
                    results[f"{count}_streams"]["service"],
                    results[f"{count}_streams"]["vllm_openai"],
                )
                results[f"{count}_streams"]["tokens_per_second_ratio"] = (
                    s["tokens_per_second"] / v["tokens_per_second"]
                )
                results[f"{count}_streams"]["ttft_ratio"] = s["ttft_ms_p50"] / v["ttft_ms_p50"]
                # Ratios of each alternating pair of runs: the spread of the ratio.
                pairs = list(zip(runs["service"], runs["vllm_openai"], strict=True))
                results[f"{count}_streams"]["tokens_per_second_ratio_runs"] = spread(
                    [a["tokens_per_second"] / b["tokens_per_second"] for a, b in pairs]
                )
                results[f"{count}_streams"]["ttft_ratio_runs"] = spread(
                    [a["ttft_ms_p50"] / b["ttft_ms_p50"] for a, b in pairs]
                )
        return results
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 60)
