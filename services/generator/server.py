"""Generator service: streaming chat completions through vLLM, in this process or behind
an OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path

import grpc
from opentelemetry import trace

from ragplane.config import env_choice, env_float, env_int, env_str, listen_address, state_dir
from ragplane.errors import ConfigError, InvalidArgument, ResourceExhausted, Unavailable
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
from ragplane.generator.model import (
    DEFAULT_MODEL,
    MODEL_NAMES,
    kv_cache_bytes,
    model_pin,
)
from ragplane.generator.repetition import RepetitionDetector, RepetitionPolicy
from ragplane.models import ResolvedModel, resolve
from ragplane.server import run_service, serve
from ragplane.telemetry import tracer
from ragplane.v1 import common_pb2, generator_pb2, generator_pb2_grpc

log = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class GeneratorSettings:
    address: str
    state_dir: Path
    backend: str  # "vllm" (AsyncLLM in this process) or "openai"
    model: str  # a catalogue name (ragplane.models.GENERATORS)
    model_path: str  # a mounted Hugging Face folder, which wins over `model`
    model_id: str
    model_revision: str
    max_model_len: int
    kv_cache_bytes: int  # 0: sized for the model (KV_CACHE_SEQUENCES full contexts)
    default_max_tokens: int
    repetition_penalty: float
    # Stop a generation whose tail repeats (repetition.py); None: never.
    repetition_policy: RepetitionPolicy | None
    max_queued: int  # generations waiting in the engine's scheduler (no token yet)
    openai_url: str
    openai_model: str
    openai_api_key: str
    timeout_s: float

    @classmethod
    def from_env(cls) -> GeneratorSettings:
        """Reads and validates RAGPLANE_GENERATOR_*; a bad value names its variable."""
        return cls(
            address=listen_address("generator"),
            state_dir=state_dir(),
            backend=env_choice("RAGPLANE_GENERATOR_BACKEND", "vllm", ("vllm", "openai")),
            model=env_choice("RAGPLANE_GENERATOR_MODEL", DEFAULT_MODEL, MODEL_NAMES),
            model_path=env_str("RAGPLANE_GENERATOR_MODEL_PATH", ""),
            model_id=env_str("RAGPLANE_GENERATOR_MODEL_ID", ""),
            model_revision=env_str("RAGPLANE_GENERATOR_MODEL_REVISION", ""),
            max_model_len=env_int("RAGPLANE_GENERATOR_MAX_MODEL_LEN", 2048, minimum=128),
            kv_cache_bytes=_kv_cache_setting(),
            default_max_tokens=env_int("RAGPLANE_GENERATOR_MAX_TOKENS", 256, minimum=1),
            repetition_penalty=env_float("RAGPLANE_GENERATOR_REPETITION_PENALTY", 1.0, minimum=0.1),
            repetition_policy=_repetition_policy(),
            max_queued=env_int("RAGPLANE_GENERATOR_MAX_QUEUED", 256, minimum=1),
            openai_url=env_str("RAGPLANE_GENERATOR_OPENAI_URL", "http://127.0.0.1:8000"),
            openai_model=env_str("RAGPLANE_GENERATOR_OPENAI_MODEL", ""),
            openai_api_key=env_str("RAGPLANE_GENERATOR_OPENAI_API_KEY", ""),
            timeout_s=env_float("RAGPLANE_GENERATOR_TIMEOUT_SECONDS", 300.0, minimum=1.0),
        )


def _repetition_policy() -> RepetitionPolicy | None:
    """RAGPLANE_GENERATOR_STOP_REPEATS: copies in a row that stop a looping answer (the
    default is the measured one; 0 turns the detector off)."""
    default = RepetitionPolicy()
    repeats = env_int("RAGPLANE_GENERATOR_STOP_REPEATS", default.min_repeats, minimum=0)
    if repeats == 1:
        raise ConfigError(
            "RAGPLANE_GENERATOR_STOP_REPEATS=1 would stop every answer; use 0 or >= 2"
        )
    return RepetitionPolicy(min_repeats=repeats) if repeats else None


def _kv_cache_setting() -> int:
    value = env_int("RAGPLANE_GENERATOR_KV_CACHE_BYTES", 0, minimum=0)
    if 0 < value < 2**20:
        raise ConfigError(
            f"RAGPLANE_GENERATOR_KV_CACHE_BYTES={value} is below the minimum {2**20} "
            "(0: sized for the model)"
        )
    return value


async def resolve_model(settings: GeneratorSettings) -> ResolvedModel:
    """The mounted folder if configured, else the catalogue model converted into the
    state dir."""
    pin = model_pin(settings.model_path, settings.model_id, settings.model_revision, settings.model)
    return await asyncio.to_thread(resolve, pin, settings.state_dir)


async def connect_openai(settings: GeneratorSettings) -> OpenAICompatibleBackend:
    """Waits up to the timeout for the server: the two may start together."""
    deadline = time.monotonic() + settings.timeout_s
    while True:
        try:
            return await OpenAICompatibleBackend.connect(
                settings.openai_url,
                settings.openai_model,
                settings.timeout_s,
                settings.openai_api_key,
                settings.model_revision,
            )
        except Unavailable as exc:
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"RAGPLANE_GENERATOR_OPENAI_URL={settings.openai_url}: no model served "
                    f"after {settings.timeout_s:.0f} s ({exc})"
                ) from None
            log.info("waiting for the OpenAI-compatible server: %s", exc)
            await asyncio.sleep(2)


async def open_backend(settings: GeneratorSettings) -> Backend:
    """The configured backend, loaded and ready to generate."""
    if settings.backend == "openai":
        return await connect_openai(settings)
    prepare_vllm_environment(settings.state_dir)
    model = await resolve_model(settings)
    kv_bytes = settings.kv_cache_bytes or kv_cache_bytes(model.path, settings.max_model_len)
    log.info("KV cache %d MiB for %s", kv_bytes // 2**20, model.id)
    # Blocks the loop while the engine starts; nothing is served yet, so nothing waits.
    return VllmInProcessBackend(model, settings.max_model_len, kv_bytes)


def parse_messages(messages: Sequence[generator_pb2.ChatMessage]) -> list[Message]:
    """Checked chat messages; INVALID_ARGUMENT names the first bad one."""
    if not messages:
        raise InvalidArgument("messages is empty")
    parsed = []
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            allowed = ", ".join(ROLES)
            raise InvalidArgument(f"messages[{i}].role is {m.role!r}; use one of {allowed}")
        if not m.content.strip():
            raise InvalidArgument(f"messages[{i}].content is empty")
        parsed.append(Message(m.role, m.content))
    return parsed


class GeneratorServicer(generator_pb2_grpc.GeneratorServiceServicer):
    def __init__(self, settings: GeneratorSettings, backend: Backend) -> None:
        self._settings = settings
        self._backend = backend
        self.running = 0
        self.queued = 0

    async def Info(self, request, context):  # noqa: N802 - gRPC method name
        """The served model, its context length and the generations in flight."""
        info = self._backend.info
        return generator_pb2.GeneratorServiceInfoResponse(
            model=common_pb2.ModelIdentity(
                id=info.model_id, revision=info.revision, weights_sha256=info.weights_sha256
            ),
            max_model_len=info.max_model_len,
            backend=self._backend.name,
            running_requests=self.running,
            queued_requests=self.queued,
        )

    async def CountPromptTokens(self, request, context):  # noqa: N802
        """Token counts of texts, of a chat prompt and of candidate prompts, with the model's
        chat template: a caller fitting context to the model needs one call."""
        messages = parse_messages(request.messages) if request.messages else []
        prompts = [parse_messages(p.messages) for p in request.prompts]
        counts = await self._backend.count_texts(list(request.texts))
        total = await self._backend.count_messages(messages) if messages else 0
        prompt_tokens = [await self._backend.count_messages(p) for p in prompts]
        return generator_pb2.CountPromptTokensResponse(
            token_counts=counts,
            messages_tokens=total,
            max_model_len=self._backend.info.max_model_len,
            prompt_tokens=prompt_tokens,
        )

    async def Generate(self, request, context):  # noqa: N802
        """Streams text deltas, then one finished event with usage and time to first token.
        A cancelled call or a passed deadline aborts the generation in the model server."""
        started = time.perf_counter()
        messages = parse_messages(request.messages)
        sampling = await self._sampling(request, messages)
        # start_span, not start_as_current_span: a stream may be closed from another task.
        with self._slot() as streaming, tracer.start_span("generate") as span:
            # aclosing: however this stream ends, the backend's request ends with it.
            async with aclosing(self._backend.generate(messages, sampling)) as events:
                guarded = self._until_repeating(events, messages)
                async for response in _responses(guarded, started):
                    streaming()
                    if response.HasField("finished"):
                        _describe(span, response.finished)
                    yield response

    async def _until_repeating(
        self, events: AsyncIterator[str | Finished], messages: list[Message]
    ) -> AsyncIterator[str | Finished]:
        """The backend's events, ended early with a finished event (reason stop, flagged)
        once the text loops; leaving the backend's stream aborts its request."""
        policy = self._settings.repetition_policy
        detector = RepetitionDetector(policy) if policy else None
        text: list[str] = []
        async for event in events:
            yield event
            if detector is None or not isinstance(event, str):
                continue
            text.append(event)
            if loop := detector.feed(event):
                log.info("stopped a looping generation: %d words, %d times", *astuple(loop))
                metrics.REPETITION_STOPS.inc()
                prompt = await self._backend.count_messages(messages)
                (completion,) = await self._backend.count_texts(["".join(text)])
                yield Finished("stop", prompt, completion, stopped_repeating=True)
                return

    @contextmanager
    def _slot(self) -> Iterator[Callable[[], None]]:
        """A generation in flight. vLLM's scheduler runs as many as fit its batch and
        queues the rest; it is queued here too until its first output (the callback).
        Only a full queue refuses a generation: a fixed concurrency limit would refuse
        what the engine would soon run."""
        limit = self._settings.max_queued
        if self.queued >= limit:
            raise ResourceExhausted(
                f"{self.queued} generations are waiting for the model, the most it queues "
                f"(RAGPLANE_GENERATOR_MAX_QUEUED={limit}); retry later",
                retry_after=1.0,
            )
        self.running += 1
        self.queued += 1
        metrics.RUNNING.inc()
        metrics.QUEUED.inc()
        waiting = True

        def streaming() -> None:
            nonlocal waiting
            if waiting:
                waiting = False
                self.queued -= 1
                metrics.QUEUED.dec()

        try:
            yield streaming
        finally:
            streaming()
            self.running -= 1
            metrics.RUNNING.dec()

    async def _sampling(self, request, messages: list[Message]) -> Sampling:
        if not (math.isfinite(request.temperature) and request.temperature >= 0):
            raise InvalidArgument(f"temperature is {request.temperature}; it must be >= 0")
        if not 0 <= request.top_p <= 1:
            raise InvalidArgument(f"top_p is {request.top_p}; it must be in [0, 1] (0 means 1)")
        if any(not s for s in request.stop):
            raise InvalidArgument("stop has an empty string")
        return Sampling(
            max_tokens=await self._max_tokens(request.max_tokens, messages),
            temperature=request.temperature,
            top_p=request.top_p or 1.0,
            stop=tuple(request.stop),
            repetition_penalty=self._settings.repetition_penalty,
        )

    async def _max_tokens(self, requested: int, messages: list[Message]) -> int:
        """The requested max_tokens if it fits the context; unset: the default, capped."""
        default = self._settings.default_max_tokens
        limit = self._backend.info.max_model_len
        if not limit:  # the server did not say; it will refuse what does not fit
            return requested or default
        prompt_tokens = await self._backend.count_messages(messages)
        room = limit - prompt_tokens
        if requested > room:
            raise InvalidArgument(
                f"the prompt has {prompt_tokens} tokens and max_tokens is {requested}: "
                f"{prompt_tokens + requested} is over the model's context of {limit} tokens"
            )
        if room < 1:
            raise InvalidArgument(
                f"the prompt has {prompt_tokens} tokens: no room left in the model's "
                f"context of {limit} tokens"
            )
        return requested or min(default, room)


def _describe(span: trace.Span, finished: generator_pb2.GenerateFinished) -> None:
    span.set_attribute("ragplane.prompt_tokens", finished.usage.prompt_tokens)
    span.set_attribute("ragplane.completion_tokens", finished.usage.completion_tokens)
    span.set_attribute("ragplane.time_to_first_token_ms", finished.time_to_first_token_ms)
    span.set_attribute(
        "ragplane.finish_reason", common_pb2.FinishReason.Name(finished.finish_reason)
    )
    span.set_attribute("ragplane.stopped_repeating", finished.stopped_repeating)


async def _responses(
    events: AsyncIterator[str | Finished], started: float
) -> AsyncIterator[generator_pb2.GenerateResponse]:
    """Backend events as gRPC messages, with the latency metrics of the stream."""
    first_at: float | None = None
    last_at = started
    async for event in events:
        now = time.perf_counter()
        if isinstance(event, Finished):
            ttft_ms = ((first_at or now) - started) * 1000
            metrics.observe_finished(event.prompt_tokens, event.completion_tokens, now - started)
            yield _finished(event, ttft_ms, (now - started) * 1000)
            return
        if first_at is None:
            first_at = now
            metrics.TIME_TO_FIRST_TOKEN.observe(now - started)
        else:
            metrics.INTER_TOKEN_LATENCY.observe(now - last_at)
        last_at = now
        yield generator_pb2.GenerateResponse(delta=event)


def _finished(event: Finished, ttft_ms: float, total_ms: float) -> generator_pb2.GenerateResponse:
    length = event.reason == "length"
    reason = common_pb2.FINISH_REASON_LENGTH if length else common_pb2.FINISH_REASON_STOP
    return generator_pb2.GenerateResponse(
        finished=generator_pb2.GenerateFinished(
            finish_reason=reason,
            usage=common_pb2.Usage(
                prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens
            ),
            time_to_first_token_ms=ttft_ms,
            timing=common_pb2.Timing(compute_ms=total_ms),
            stopped_repeating=event.stopped_repeating,
        )
    )


async def run(settings: GeneratorSettings) -> None:
    """Loads the model, then serves; health turns SERVING only once generation works."""
    started = time.perf_counter()
    backend = await open_backend(settings)
    info = backend.info
    log.info(
        "generator backend %s serving %s (%d tokens) ready in %.1f s",
        backend.name,
        info.model_id,
        info.max_model_len,
        time.perf_counter() - started,
    )
    servicer = GeneratorServicer(settings, backend)
    metrics.QUEUE_LIMIT.set(settings.max_queued)

    def register(server: grpc.aio.Server) -> list[str]:
        generator_pb2_grpc.add_GeneratorServiceServicer_to_server(servicer, server)
        return [generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"].full_name]

    try:
        await serve("generator", settings.address, register, on_shutdown=backend.close)
    except BaseException:
        await backend.close()  # the engine's processes must not outlive a failed start
        raise


def main() -> None:
    """Console entry point: ragplane-generator."""
    run_service("generator", lambda: run(GeneratorSettings.from_env()))


if __name__ == "__main__":
    main()
