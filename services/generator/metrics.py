"""The generator's instruments, created in one place. vLLM's own engine metrics (vllm:*)
register in the same registry and are served on the same endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ragplane.telemetry import LATENCY_BUCKETS

RUNNING = Gauge(
    "ragplane_generator_running_requests", "Generations in flight, queued ones included."
)
QUEUED = Gauge(
    "ragplane_generator_queued_requests",
    "Generations waiting in the engine's scheduler: accepted, no output yet.",
)
QUEUE_LIMIT = Gauge(
    "ragplane_generator_queue_limit",
    "Generations that may wait (RAGPLANE_GENERATOR_MAX_QUEUED); more are refused.",
)
TIME_TO_FIRST_TOKEN = Histogram(
    "ragplane_generator_time_to_first_token_seconds",
    "From a Generate request to its first text delta.",
    buckets=LATENCY_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "ragplane_generator_inter_token_latency_seconds",
    "Time between consecutive text deltas of one generation.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
GENERATION_DURATION = Histogram(
    "ragplane_generator_generation_duration_seconds",
    "From a Generate request to its finished event.",
    buckets=LATENCY_BUCKETS,
)
REPETITION_STOPS = Counter(
    "ragplane_generator_repetition_stops",
    "Generations stopped because their output kept repeating itself.",
)
PROMPT_TOKENS = Counter("ragplane_generator_prompt_tokens", "Prompt tokens processed.")
COMPLETION_TOKENS = Counter("ragplane_generator_completion_tokens", "Tokens generated.")


def observe_finished(prompt_tokens: int, completion_tokens: int, seconds: float) -> None:
    """Records one completed generation."""
    GENERATION_DURATION.observe(seconds)
    PROMPT_TOKENS.inc(prompt_tokens)
    COMPLETION_TOKENS.inc(completion_tokens)
