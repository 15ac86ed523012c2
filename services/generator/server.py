"""Generator service: streaming chat completions through vLLM."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from ragplane.config import env_choice, env_float, env_int, env_str, listen_address, state_dir
from ragplane.errors import InvalidArgument, ResourceExhausted
from ragplane.generator import metrics
from ragplane.generator.backends import (
    Backend,
    Finished,
    Message,
    OpenAICompatibleBackend,
    Sampling,
    VllmInProcessBackend,
    prepare_vllm_environment,
)
from ragplane.generator.model import ensure_converted, mounted_folder
from ragplane.server import run_service, serve
from ragplane.telemetry import tracer
from ragplane.v1 import common_pb2, generator_pb2, generator_pb2_grpc

log = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class GeneratorSettings:
    address: str
    state_dir: Path
    backend: str
    model_path: str
    model_id: str
    model_revision: str
    max_model_len: int
    kv_cache_bytes: int
    default_max_tokens: int
    repetition_penalty: float
    max_concurrency: int
    openai_url: str
    openai_model: str
    openai_api_key: str
    timeout_s: float

    @classmethod
    def from_env(cls) -> GeneratorSettings:
        return cls(
            address=listen_address("generator"),
            state_dir=state_dir(),
            backend=env_choice("RAGPLANE_GENERATOR_BACKEND", "vllm", ("vllm", "openai")),
            model_path=env_str("RAGPLANE_GENERATOR_MODEL_PATH", ""),
            model_id=env_str("RAGPLANE_GENERATOR_MODEL_ID", ""),
            model_revision=env_str("RAGPLANE_GENERATOR_MODEL_REVISION", ""),
            max_model_len=env_int("RAGPLANE_GENERATOR_MAX_MODEL_LEN", 2048, minimum=256),
            kv_cache_bytes=env_int("RAGPLANE_GENERATOR_KV_CACHE_BYTES", 256 * 2**20, minimum=2**20),
            default_max_tokens=env_int("RAGPLANE_GENERATOR_MAX_TOKENS", 256, minimum=1),
            repetition_penalty=env_float("RAGPLANE_GENERATOR_REPETITION_PENALTY", 1.0, minimum=0.1),
            max_concurrency=env_int("RAGPLANE_GENERATOR_MAX_CONCURRENCY", 64, minimum=1),
            openai_url=env_str("RAGPLANE_GENERATOR_OPENAI_URL", "http://127.0.0.1:8000"),
            openai_model=env_str("RAGPLANE_GENERATOR_OPENAI_MODEL", ""),
            openai_api_key=env_str("RAGPLANE_GENERATOR_OPENAI_API_KEY", ""),
            timeout_s=env_float("RAGPLANE_GENERATOR_TIMEOUT_SECONDS", 300.0, minimum=1.0),
        )


async def open_backend(settings: GeneratorSettings) -> Backend:
    if settings.backend == "openai":
        remote = OpenAICompatibleBackend(
            settings.openai_url, settings.openai_model, settings.timeout_s, settings.openai_api_key
        )
        await remote.start()
        return remote
    prepare_vllm_environment(settings.state_dir)
    if settings.model_path:
        folder = mounted_folder(
            Path(settings.model_path), settings.model_id, settings.model_revision
        )
    else:
        folder = await asyncio.to_thread(ensure_converted, settings.state_dir)
    return VllmInProcessBackend(folder, settings.max_model_len, settings.kv_cache_bytes)


def _messages(request) -> list[Message]:
    if not request.messages:
        raise InvalidArgument("messages is empty")
    messages = []
    for i, m in enumerate(request.messages):
        if m.role not in ROLES:
            raise InvalidArgument(
                f"messages[{i}].role is {m.role!r}; use one of {', '.join(ROLES)}"
            )
        if not m.content.strip():
            raise InvalidArgument(f"messages[{i}].content is empty")
        messages.append(Message(m.role, m.content))
    return messages


class GeneratorServicer(generator_pb2_grpc.GeneratorServiceServicer):
    def __init__(self, settings: GeneratorSettings, backend: Backend) -> None:
        self._settings = settings
        self._backend = backend
        self.running = 0
        metrics.CONCURRENCY_LIMIT.set(settings.max_concurrency)

    async def Info(self, request, context):  # noqa: N802 - gRPC method name
        """The served model, its context length and the generations in flight."""
        b = self._backend
        return generator_pb2.GeneratorServiceInfoResponse(
            model_id=b.model_id,
            revision=b.revision,
            weights_sha256=b.weights_sha256,
            max_model_len=b.max_model_len,
            backend=b.name,
            running_requests=self.running,
        )

    async def CountPromptTokens(self, request, context):  # noqa: N802
        """Token counts of texts and of a chat prompt, with the model's chat template."""
        messages = _messages(request) if request.messages else []
        counts, total = await self._backend.count(list(request.texts), messages)
        return generator_pb2.CountPromptTokensResponse(
            token_counts=counts, messages_tokens=total, max_model_len=self._backend.max_model_len
        )

    async def Generate(self, request, context):  # noqa: N802
        """Streams text deltas, then one finished event with usage and time to first token."""
        started = time.perf_counter()
        messages = _messages(request)
        sampling = await self._sampling(request, messages)
        if self.running >= self._settings.max_concurrency:
            raise ResourceExhausted(
                f"{self.running} generations in flight, the limit is "
                f"{self._settings.max_concurrency} (RAGPLANE_GENERATOR_MAX_CONCURRENCY); "
                "retry later"
            )
        self.running += 1
        metrics.RUNNING.inc()
        first_token_at: float | None = None
        last_token_at = started
        try:
            with tracer.start_as_current_span("generate") as span:
                async for event in self._backend.generate(messages, sampling):
                    now = time.perf_counter()
                    if isinstance(event, Finished):
                        ttft = ((first_token_at or now) - started) * 1000
                        span.set_attributes(
                            {
                                "ragplane.prompt_tokens": event.prompt_tokens,
                                "ragplane.completion_tokens": event.completion_tokens,
                                "ragplane.time_to_first_token_ms": ttft,
                            }
                        )
                        metrics.observe_finished(event, now - started)
                        yield _finished(event, ttft, now - started)
                        return
                    if first_token_at is None:
                        first_token_at = now
                        metrics.TIME_TO_FIRST_TOKEN.observe(now - started)
                    else:
                        metrics.INTER_TOKEN_LATENCY.observe(now - last_token_at)
                    last_token_at = now
                    metrics.DELTAS.inc()
                    yield generator_pb2.GenerateResponse(delta=event)
        finally:
            self.running -= 1
            metrics.RUNNING.dec()

    async def _sampling(self, request, messages: list[Message]) -> Sampling:
        if request.temperature < 0:
            raise InvalidArgument(f"temperature is {request.temperature}; it must be >= 0")
        if not 0 <= request.top_p <= 1:
            raise InvalidArgument(f"top_p is {request.top_p}; it must be in [0, 1]")
        max_tokens = request.max_tokens or self._settings.default_max_tokens
        _, prompt_tokens = await self._backend.count([], messages)
        limit = self._backend.max_model_len
        if limit and prompt_tokens + max_tokens > limit:
            raise InvalidArgument(
                f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: "
                f"together over the model's context of {limit} tokens"
            )
        return Sampling(
            max_tokens,
            request.temperature,
            request.top_p or 1.0,
            tuple(request.stop),
            self._settings.repetition_penalty,
        )


def _finished(event: Finished, ttft_ms: float, total_s: float) -> generator_pb2.GenerateResponse:
    reason = (
        common_pb2.FINISH_REASON_LENGTH
        if event.reason == "length"
        else common_pb2.FINISH_REASON_STOP
    )
    return generator_pb2.GenerateResponse(
        finished=generator_pb2.GenerateFinished(
            finish_reason=reason,
            usage=common_pb2.Usage(
                prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens
            ),
            time_to_first_token_ms=ttft_ms,
            timing=common_pb2.Timing(compute_ms=total_s * 1000),
        )
    )


async def run(settings: GeneratorSettings) -> None:
    started = time.perf_counter()
    backend = await open_backend(settings)
    log.info(
        "generator backend %s serving %s (%d tokens) ready in %.1f s",
        backend.name,
        backend.model_id,
        backend.max_model_len,
        time.perf_counter() - started,
    )
    servicer = GeneratorServicer(settings, backend)

    def register(server: grpc.aio.Server) -> list[str]:
        generator_pb2_grpc.add_GeneratorServiceServicer_to_server(servicer, server)
        return [generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"].full_name]

    await serve("generator", settings.address, register, on_shutdown=backend.close)


def main() -> None:
    run_service("generator", lambda: run(GeneratorSettings.from_env()))


if __name__ == "__main__":
    main()
