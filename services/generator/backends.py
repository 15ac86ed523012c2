"""Two real ways to generate behind one interface: vLLM in this process (AsyncLLM), or any
OpenAI-compatible server (vLLM's own server in production)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from ragplane.errors import InvalidArgument, Unavailable
from ragplane.models import ResolvedModel

log = logging.getLogger(__name__)
# httpx logs every request at INFO; the access log and the spans already cover them.
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...] = ()
    # Small models loop on greedy decoding; a mild penalty keeps answers from repeating.
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class Finished:
    """The last event of a generation."""

    reason: str  # "stop" (end of answer or a stop string) or "length" (max_tokens)
    prompt_tokens: int
    completion_tokens: int
    # Stopped by the servicer's repetition detector (reason "stop"), not by the model.
    stopped_repeating: bool = False


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    revision: str
    weights_sha256: str
    max_model_len: int


class Backend(Protocol):
    """What the servicer needs from a model server."""

    name: str  # "vllm-inprocess" or "openai", as Info reports it
    info: ModelInfo

    async def count_texts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, without special tokens."""
        ...

    async def count_messages(self, messages: Sequence[Message]) -> int:
        """Tokens of the messages rendered with the chat template and generation prompt."""
        ...

    def generate(
        self, messages: Sequence[Message], sampling: Sampling
    ) -> AsyncGenerator[str | Finished, None]:
        """Text deltas, then one Finished. Closing or cancelling the iterator aborts the
        request in the model server."""
        ...

    async def close(self) -> None: ...


def vllm_environment(state_dir: Path) -> dict[str, str]:
    """What vLLM's CPU build needs in its environment; its caches stay in the state dir."""
    cache = state_dir / "cache"
    return {
        "VLLM_HOST_IP": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "HF_HOME": str(cache / "huggingface"),
        "XDG_CACHE_HOME": str(cache / "xdg"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def prepare_vllm_environment(state_dir: Path) -> None:
    """Sets vllm_environment() before vLLM is imported; explicit settings win."""
    for name, value in vllm_environment(state_dir).items():
        os.environ.setdefault(name, value)


def _finish_reason(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


class VllmInProcessBackend:
    """vLLM's AsyncLLM in this process; its engine core runs in a child process.
    Chat rendering and tokenisation go through vLLM's own renderer, as in its server."""

    name = "vllm-inprocess"

    def __init__(self, model: ResolvedModel, max_model_len: int, kv_cache_bytes: int) -> None:
        """Starts the engine (about 25 s on CPU); call prepare_vllm_environment() first."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.renderers import ChatParams, TokenizeParams
        from vllm.v1.engine.async_llm import AsyncLLM

        self.info = ModelInfo(model.id, model.revision, model.weights_sha256, max_model_len)
        self._engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(
                model=str(model.path),
                served_model_name=[model.id],
                max_model_len=max_model_len,
                kv_cache_memory_bytes=kv_cache_bytes,
                enforce_eager=True,  # no graph compilation: starts in seconds, not minutes
                disable_log_stats=False,  # vllm:* metrics on the generator's endpoint
            )
        )
        self._chat_params = ChatParams(chat_template_kwargs={"add_generation_prompt": True})
        # Counting must work past the context length, so no limit here; Generate checks it.
        self._tok_params = TokenizeParams(max_total_tokens=None, add_special_tokens=False)

    async def _render(self, messages: Sequence[Message]) -> dict[str, Any]:
        conversation: list[Any] = [asdict(m) for m in messages]
        _, (engine_input,) = await self._engine.renderer.render_chat_async(
            [conversation], self._chat_params, self._tok_params
        )
        return engine_input

    async def count_texts(self, texts: Sequence[str]) -> list[int]:
        tokenizer = self._engine.renderer.get_tokenizer()

        def count() -> list[int]:
            return [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]

        return await asyncio.to_thread(count) if texts else []

    async def count_messages(self, messages: Sequence[Message]) -> int:
        return len((await self._render(messages))["prompt_token_ids"])

    async def generate(
        self, messages: Sequence[Message], sampling: Sampling
    ) -> AsyncGenerator[str | Finished, None]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        engine_input = await self._render(messages)
        params = SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=list(sampling.stop) or None,
            repetition_penalty=sampling.repetition_penalty,
            output_kind=RequestOutputKind.DELTA,
        )
        completion_tokens = 0
        # vLLM aborts the request when this loop is cancelled or closed.
        # engine_input is the TokensPrompt dict _render builds.
        request_id = uuid.uuid4().hex
        outputs = self._engine.generate(engine_input, params, request_id)  # type: ignore[arg-type]
        async for output in outputs:
            piece = output.outputs[0]
            completion_tokens += len(piece.token_ids)
            if piece.text:
                yield piece.text
            if output.finished:
                reason = _finish_reason(piece.finish_reason)
                yield Finished(reason, len(engine_input["prompt_token_ids"]), completion_tokens)

    async def close(self) -> None:
        self._engine.shutdown()
        # Collected now, while modules are alive: AsyncLLM.__del__ fails at interpreter exit.
        del self._engine
        gc.collect()


class OpenAICompatibleBackend:
    """Any OpenAI-compatible server: chat completions streamed over SSE with usage,
    vLLM's /tokenize to count, /v1/models for the served model and its context length."""

    name = "openai"

    def __init__(self, client: httpx.AsyncClient, info: ModelInfo) -> None:
        self._client = client
        self.info = info

    @classmethod
    async def connect(
        cls, base_url: str, model: str, timeout_s: float, api_key: str = "", revision: str = ""
    ) -> OpenAICompatibleBackend:
        """Learns the served model (`model`, or the only one) and its context length."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout_s, headers=headers
        )
        try:
            card = _choose_model(await _call(client, "GET", "/v1/models"), model, base_url)
        except BaseException:
            await client.aclose()
            raise
        info = ModelInfo(
            model_id=card["id"],
            revision=revision or card.get("root") or "",
            weights_sha256="",  # an OpenAI-compatible server does not say
            max_model_len=int(card.get("max_model_len") or 0),
        )
        return cls(client, info)

    async def _tokenize(self, body: dict[str, Any]) -> int:
        body = {"model": self.info.model_id, **body}
        reply = await _call(self._client, "POST", "/tokenize", body)
        return int(reply["count"])

    async def count_texts(self, texts: Sequence[str]) -> list[int]:
        bodies = [{"prompt": t, "add_special_tokens": False} for t in texts]
        return list(await asyncio.gather(*(self._tokenize(b) for b in bodies)))

    async def count_messages(self, messages: Sequence[Message]) -> int:
        return await self._tokenize(
            {"messages": [asdict(m) for m in messages], "add_generation_prompt": True}
        )

    def _chat_body(self, messages: Sequence[Message], sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.info.model_id,
            "messages": [asdict(m) for m in messages],
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.repetition_penalty != 1.0:
            body["repetition_penalty"] = sampling.repetition_penalty  # a vLLM extension
        return body

    async def generate(
        self, messages: Sequence[Message], sampling: Sampling
    ) -> AsyncGenerator[str | Finished, None]:
        body = self._chat_body(messages, sampling)
        reason = "stop"
        try:
            # Leaving this block early (the caller cancelled) closes the connection, and
            # the server aborts the request.
            async with self._client.stream("POST", "/v1/chat/completions", json=body) as reply:
                if reply.status_code != 200:
                    _raise_for(reply.status_code, (await reply.aread()).decode(errors="replace"))
                async for line in reply.aiter_lines():
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    event = json.loads(line[5:])
                    for choice in event.get("choices") or []:
                        if text := (choice.get("delta") or {}).get("content"):
                            yield text
                        if choice.get("finish_reason"):
                            reason = _finish_reason(choice["finish_reason"])
                    if usage := event.get("usage"):
                        yield Finished(reason, usage["prompt_tokens"], usage["completion_tokens"])
                        return
        except httpx.HTTPError as exc:
            raise _unreachable(self._client, exc) from None
        raise Unavailable(f"OpenAI-compatible server at {self._client.base_url}: no usage")

    async def close(self) -> None:
        await self._client.aclose()


async def _call(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    try:
        reply = await client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise _unreachable(client, exc) from None
    if reply.status_code != 200:
        _raise_for(reply.status_code, reply.text)
    return reply.json()


def _unreachable(client: httpx.AsyncClient, exc: httpx.HTTPError) -> Unavailable:
    return Unavailable(f"OpenAI-compatible server at {client.base_url}: {exc!r}")


def _raise_for(status: int, detail: str) -> None:
    """The server's own refusal of a request is the caller's problem; anything else is ours."""
    message = f"OpenAI-compatible server answered {status}: {detail[:500]}"
    if status in (400, 422):
        raise InvalidArgument(message)
    raise Unavailable(message)


def _choose_model(models: dict[str, Any], wanted: str, base_url: str) -> dict[str, Any]:
    cards = models.get("data") or []
    if not wanted and len(cards) == 1:
        return cards[0]
    for card in cards:
        if card["id"] == wanted:
            return card
    served = ", ".join(c["id"] for c in cards) or "nothing"
    raise Unavailable(
        f"{base_url} serves {served}; set RAGPLANE_GENERATOR_OPENAI_MODEL to one of them"
    )
