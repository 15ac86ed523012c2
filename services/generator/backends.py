"""Two real ways to generate behind one RPC: vLLM in this process (AsyncLLM), or any
OpenAI-compatible server (vLLM's own server in production)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from ragplane.errors import Unavailable
from ragplane.generator.model import ModelFolder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    # Small models loop on greedy decoding; a mild penalty keeps answers from repeating.
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


class Backend(Protocol):
    name: str
    model_id: str
    revision: str
    weights_sha256: str
    max_model_len: int

    async def count(
        self, texts: Sequence[str], messages: Sequence[Message]
    ) -> tuple[list[int], int]:
        """Tokens of each text, and of the messages rendered with the chat template."""
        ...

    def generate(
        self, messages: Sequence[Message], sampling: Sampling
    ) -> AsyncIterator[str | Finished]:
        """Text deltas, then one Finished. Cancelling the consumer aborts the request."""
        ...

    async def close(self) -> None: ...


def vllm_environment(state_dir: Path) -> dict[str, str]:
    """What vLLM's CPU build needs in its environment; caches stay in the state dir."""
    cache = state_dir / "cache"
    return {
        "VLLM_HOST_IP": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "HF_HOME": str(cache / "huggingface"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def prepare_vllm_environment(state_dir: Path) -> None:
    """Sets vllm_environment() before vLLM is imported; explicit settings win."""
    for name, value in vllm_environment(state_dir).items():
        os.environ.setdefault(name, value)


class VllmInProcessBackend:
    """vLLM's AsyncLLM in this process; its engine core runs in a child process."""

    name = "vllm-inprocess"

    def __init__(self, folder: ModelFolder, max_model_len: int, kv_cache_bytes: int) -> None:
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.model_id = folder.model_id
        self.revision = folder.revision
        self.weights_sha256 = folder.weights_sha256
        self.max_model_len = max_model_len
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder.path))
        self._engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(
                model=str(folder.path),
                served_model_name=[folder.model_id],
                max_model_len=max_model_len,
                kv_cache_memory_bytes=kv_cache_bytes,
                enforce_eager=True,
                disable_log_stats=False,
            )
        )

    def _prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        rendered = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        return list(rendered)

    async def count(
        self, texts: Sequence[str], messages: Sequence[Message]
    ) -> tuple[list[int], int]:
        def run() -> tuple[list[int], int]:
            counts = [len(self._tokenizer.encode(t, add_special_tokens=False)) for t in texts]
            return counts, len(self._prompt_ids(messages)) if messages else 0

        return await asyncio.get_running_loop().run_in_executor(None, run)

    async def generate(
        self, messages: Sequence[Message], sampling: Sampling
    ) -> AsyncIterator[str | Finished]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        prompt_ids = await asyncio.get_running_loop().run_in_executor(
            None, self._prompt_ids, messages
        )
        params = SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=list(sampling.stop) or None,
            repetition_penalty=sampling.repetition_penalty,
            output_kind=RequestOutputKind.DELTA,
        )
        completion_tokens = 0
        request_id = uuid.uuid4().hex
        async for output in self._engine.generate(
            {"prompt_token_ids": prompt_ids}, params, request_id
        ):
            piece = output.outputs[0]
            completion_tokens += len(piece.token_ids)
            if piece.text:
                yield piece.text
            if output.finished:
                reason = "length" if piece.finish_reason == "length" else "stop"
                yield Finished(reason, len(prompt_ids), completion_tokens)

    async def close(self) -> None:
        self._engine.shutdown()


class OpenAICompatibleBackend:
    """Any OpenAI-compatible server: chat completions streamed over SSE, /tokenize to count."""

    name = "openai"

    def __init__(self, base_url: str, model: str, timeout_s: float, api_key: str = "") -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout_s, headers=headers
        )
        self._base_url = base_url
        self.model_id = model
        self.revision = ""
        self.weights_sha256 = ""
        self.max_model_len = 0

    async def start(self) -> None:
        """Learns the served model and its context length from /v1/models."""
        reply = await self._request("GET", "/v1/models")
        models = reply["data"]
        chosen = (
            next((m for m in models if m["id"] == self.model_id), None)
            if self.model_id
            else models[0]
        )
        if chosen is None:
            raise Unavailable(
                f"{self._base_url} does not serve {self.model_id!r} (it serves "
                + ", ".join(m["id"] for m in models)
                + ")"
            )
        self.model_id = chosen["id"]
        self.revision = chosen.get("root", "")
        self.max_model_len = int(chosen.get("max_model_len") or 0)

    async def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            response = await self._client.request(method, path, json=body)
            response.raise_for_status()
            return response.json()
        except httpx.HTTPError as exc:
            raise Unavailable(f"OpenAI-compatible server at {self._base_url}: {exc}") from None

    async def count(
        self, texts: Sequence[str], messages: Sequence[Message]
    ) -> tuple[list[int], int]:
        async def tokens(body: dict) -> int:
            reply = await self._request("POST", "/tokenize", {"model": self.model_id, **body})
            return int(reply["count"])

        counts = await asyncio.gather(
            *(tokens({"prompt": t, "add_special_tokens": False}) for t in texts)
        )
        total = 0
        if messages:
            total = await tokens(
                {"messages": [m.__dict__ for m in messages], "add_generation_prompt": True}
            )
        return list(counts), total

    async def generate(
        self, messages: Sequence[Message], sampling: Sampling
    ) -> AsyncIterator[str | Finished]:
        body = {
            "model": self.model_id,
            "messages": [m.__dict__ for m in messages],
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "repetition_penalty": sampling.repetition_penalty,  # a vLLM extension
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        reason = "stop"
        try:
            # Leaving this block early (the caller cancelled) closes the stream, and the
            # server aborts the request.
            async with self._client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:500]
                    raise Unavailable(
                        f"OpenAI-compatible server at {self._base_url} answered "
                        f"{response.status_code}: {detail}"
                    )
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    for choice in event.get("choices") or []:
                        if text := (choice.get("delta") or {}).get("content"):
                            yield text
                        if choice.get("finish_reason"):
                            reason = "length" if choice["finish_reason"] == "length" else "stop"
                    if usage := event.get("usage"):
                        yield Finished(reason, usage["prompt_tokens"], usage["completion_tokens"])
        except httpx.HTTPError as exc:
            raise Unavailable(f"OpenAI-compatible server at {self._base_url}: {exc}") from None

    async def close(self) -> None:
        await self._client.aclose()
