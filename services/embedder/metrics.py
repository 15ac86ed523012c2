"""The embedder's instruments, created in one place."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ragplane.telemetry import LATENCY_BUCKETS

BATCH_SIZE = Histogram(
    "ragplane_embedder_batch_size",
    "Texts per model forward pass formed by the dynamic batcher.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_TOKENS = Histogram(
    "ragplane_embedder_batch_tokens",
    "Tokens per batch formed by the dynamic batcher (capped by max_batch_tokens).",
    buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
)
BATCH_DURATION = Histogram(
    "ragplane_embedder_batch_duration_seconds",
    "Model time of one batch.",
    buckets=LATENCY_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "ragplane_embedder_queue_wait_seconds",
    "Time a request waited before its batch started.",
    buckets=LATENCY_BUCKETS,
)
QUEUE_DEPTH = Gauge("ragplane_embedder_queue_texts", "Texts waiting in the batcher's queue.")
QUEUE_LIMIT = Gauge("ragplane_embedder_queue_limit_texts", "Most texts the queue accepts.")
TEXTS = Counter("ragplane_embedder_texts", "Texts embedded.")
TOKENS = Counter("ragplane_embedder_tokens", "Tokens embedded (special tokens included).")
REJECTED = Counter(
    "ragplane_embedder_rejected_requests", "Requests refused because the queue was full."
)
