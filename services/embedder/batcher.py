"""Dynamic batching: concurrent Embed calls share one model forward pass, a batch capped
in texts and in tokens (text-embeddings-inference's `max_batch_tokens`)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from ragplane.embedder import metrics
from ragplane.errors import ResourceExhausted


@dataclass
class _Pending:
    texts: list[str]
    tokens: int
    future: asyncio.Future[tuple[np.ndarray, float, float]]
    enqueued_at: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Collects requests for up to `max_wait_s`, runs them as one batch in `executor`.

    A batch holds at most `max_batch_size` texts and `max_batch_tokens` tokens (0: no
    token cap), so a query's one text waits behind a bounded amount of model work however
    long the indexing texts queued before it are; a request larger than either cap runs
    as a batch of its own. The queue is bounded in texts; a request that would overflow
    it is refused with RESOURCE_EXHAUSTED so callers back off instead of piling up
    latency.
    """

    def __init__(
        self,
        encode_batch: Callable[[list[str]], np.ndarray],
        executor: Executor,
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue_texts: int,
        max_batch_tokens: int = 0,
    ) -> None:
        self._encode_batch = encode_batch
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self._max_wait_s = max_wait_s
        self._max_queue_texts = max_queue_texts
        metrics.QUEUE_LIMIT.set(max_queue_texts)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._queued_texts = 0
        # A request taken from the queue that did not fit the last batch leads the next.
        self._carry: _Pending | None = None
        self._worker: asyncio.Task[None] | None = None
        # Texts and tokens per formed batch, for benchmarks and tests.
        self.batch_sizes: Counter[int] = Counter()
        self.batch_tokens: Counter[int] = Counter()

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def embed(
        self, texts: list[str], tokens: Sequence[int] = ()
    ) -> tuple[np.ndarray, float, float]:
        """Vectors for texts, with seconds spent queued and computing; `tokens`, each
        text's token count, counts against the batch's token cap."""
        if self._queued_texts + len(texts) > self._max_queue_texts:
            metrics.REJECTED.inc()
            raise ResourceExhausted(
                f"embedder queue is full ({self._queued_texts} texts waiting, limit "
                f"{self._max_queue_texts}); retry with backoff"
            )
        pending = _Pending(texts, sum(tokens), asyncio.get_running_loop().create_future())
        self._queued_texts += len(texts)
        metrics.QUEUE_DEPTH.set(self._queued_texts)
        self._queue.put_nowait(pending)
        return await pending.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [p for p in batch if not p.future.done()]
            self._queued_texts -= sum(len(p.texts) for p in batch)
            metrics.QUEUE_DEPTH.set(self._queued_texts)
            if not live:
                continue
            texts = [t for p in live for t in p.texts]
            tokens = sum(p.tokens for p in live)
            self.batch_sizes[len(texts)] += 1
            self.batch_tokens[tokens] += 1
            metrics.BATCH_SIZE.observe(len(texts))
            metrics.BATCH_TOKENS.observe(tokens)
            started = time.perf_counter()
            for p in live:
                metrics.QUEUE_WAIT.observe(started - p.enqueued_at)
            try:
                vectors = await loop.run_in_executor(self._executor, self._encode_batch, texts)
            except Exception as exc:  # noqa: BLE001 - the callers get the error
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            compute_s = time.perf_counter() - started
            metrics.BATCH_DURATION.observe(compute_s)
            metrics.TEXTS.inc(len(texts))
            offset = 0
            for p in live:
                part = vectors[offset : offset + len(p.texts)]
                offset += len(p.texts)
                if not p.future.done():
                    p.future.set_result((part, started - p.enqueued_at, compute_s))

    async def _collect(self) -> list[_Pending]:
        """One batch: the first waiting request plus whatever fits before the wait ends."""
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, size, tokens = [first], len(first.texts), first.tokens
        deadline = time.perf_counter() + self._max_wait_s
        while size < self.max_batch_size and not self._over_tokens(tokens, 1):
            remaining = deadline - time.perf_counter()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                nxt = (
                    self._queue.get_nowait()
                    if remaining <= 0
                    else await asyncio.wait_for(self._queue.get(), remaining)
                )
            except (TimeoutError, asyncio.QueueEmpty):
                break
            if size + len(nxt.texts) > self.max_batch_size or self._over_tokens(tokens, nxt.tokens):
                self._carry = nxt
                break
            batch.append(nxt)
            size += len(nxt.texts)
            tokens += nxt.tokens
        return batch

    def _over_tokens(self, tokens: int, more: int) -> bool:
        """Whether `more` tokens would take a batch of `tokens` past the token cap."""
        return bool(self.max_batch_tokens) and tokens + more > self.max_batch_tokens
