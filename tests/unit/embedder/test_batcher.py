"""Dynamic batching around the model: concurrent requests share batches; the queue is bounded.

The encode function here is a plain function over numbers (the model is exercised by the
integration tests); what is tested is the batching code around it.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ragplane.embedder.batcher import DynamicBatcher
from ragplane.errors import ResourceExhausted


def slow_encode(texts: list[str]) -> np.ndarray:
    time.sleep(0.05)
    return np.array([[float(len(t)), float(i)] for i, t in enumerate(texts)])


@pytest.fixture
async def batcher():
    b = DynamicBatcher(
        slow_encode,
        ThreadPoolExecutor(1),
        max_batch_size=16,
        max_wait_s=0.02,
        max_queue_texts=40,
    )
    b.start()
    yield b
    await b.stop()


async def test_concurrent_requests_are_batched_and_answered_in_order(batcher):
    requests = [[f"r{r}-" + "x" * t for t in range(3)] for r in range(8)]
    results = await asyncio.gather(*(batcher.embed(texts) for texts in requests))
    for texts, (vectors, _, _) in zip(requests, results, strict=True):
        assert [v[0] for v in vectors] == [float(len(t)) for t in texts]
    assert max(batcher.batch_sizes) > 3  # requests shared batches
    assert max(batcher.batch_sizes) <= 16
    assert sum(size * n for size, n in batcher.batch_sizes.items()) == 24


async def test_full_queue_is_refused(batcher):
    first = asyncio.ensure_future(batcher.embed(["a"] * 30))
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted, match="queue is full"):
        await batcher.embed(["b"] * 20)
    await first
    # Once drained, the same request is accepted.
    vectors, _, _ = await batcher.embed(["b"] * 20)
    assert len(vectors) == 20


async def test_encode_errors_reach_every_caller_of_the_batch():
    def broken(texts):
        raise RuntimeError("model failed")

    b = DynamicBatcher(
        broken, ThreadPoolExecutor(1), max_batch_size=8, max_wait_s=0.01, max_queue_texts=100
    )
    b.start()
    try:
        results = await asyncio.gather(b.embed(["a"]), b.embed(["b"]), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert b.queued_texts == 0
    finally:
        await b.stop()


async def test_batches_are_capped_in_tokens_and_a_large_request_runs_alone():
    b = DynamicBatcher(
        slow_encode,
        ThreadPoolExecutor(1),
        max_batch_size=64,
        max_wait_s=0.05,
        max_queue_texts=1000,
        max_batch_tokens=100,
    )
    b.start()
    try:
        requests = [(["x"] * 4, [10] * 4) for _ in range(6)]  # 40 tokens each
        large = (["y"] * 3, [80, 80, 80])  # 240 tokens: over the cap on its own
        results = await asyncio.gather(
            *(b.embed(texts, tokens) for texts, tokens in [*requests, large])
        )
        assert [len(vectors) for vectors, _, _ in results] == [4] * 6 + [3]
        assert max(t for t in b.batch_tokens if t != 240) <= 100
        assert b.batch_tokens[240] == 1  # the large request, whole and alone
        assert sum(t * n for t, n in b.batch_tokens.items()) == 6 * 40 + 240
    finally:
        await b.stop()
