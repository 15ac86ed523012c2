"""The generator lets the engine's scheduler queue generations, reports how many wait,
and refuses one only when that queue is full, with a retry hint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

import pytest

from ragplane.errors import ResourceExhausted
from ragplane.generator.backends import Finished, Message, ModelInfo, Sampling
from ragplane.generator.server import GeneratorServicer, GeneratorSettings
from ragplane.v1 import generator_pb2


class GatedBackend:
    """Holds every generation before its first output until `gate` is set, as vLLM's
    scheduler holds what its batch cannot run yet."""

    name = "fake"
    info = ModelInfo("team/fake", "r1", "", 2048)

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def count_texts(self, texts: Sequence[str]) -> list[int]:
        return [1 for _ in texts]

    async def count_messages(self, messages: Sequence[Message]) -> int:
        return 5

    async def generate(
        self, messages: Sequence[Message], sampling: Sampling
    ) -> AsyncGenerator[str | Finished, None]:
        await self.gate.wait()
        yield "Roll back."
        yield Finished("stop", 5, 2)

    async def close(self) -> None: ...


def servicer(monkeypatch: pytest.MonkeyPatch, tmp_path, queued: int) -> GeneratorServicer:
    monkeypatch.setenv("RAGPLANE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RAGPLANE_GENERATOR_MAX_QUEUED", str(queued))
    return GeneratorServicer(GeneratorSettings.from_env(), GatedBackend())


async def generate(servicer: GeneratorServicer) -> list[generator_pb2.GenerateResponse]:
    request = generator_pb2.GenerateRequest(
        messages=[generator_pb2.ChatMessage(role="user", content="How do I roll back?")]
    )
    return [r async for r in servicer.Generate(request, None)]


async def info(servicer: GeneratorServicer) -> tuple[int, int]:
    reply = await servicer.Info(generator_pb2.GeneratorServiceInfoRequest(), None)
    return reply.running_requests, reply.queued_requests


async def test_only_a_full_queue_refuses_and_says_when_to_retry(monkeypatch, tmp_path):
    gen = servicer(monkeypatch, tmp_path, queued=2)
    waiting = [asyncio.create_task(generate(gen)) for _ in range(2)]
    await asyncio.sleep(0.05)
    assert await info(gen) == (2, 2)
    with pytest.raises(ResourceExhausted, match="RAGPLANE_GENERATOR_MAX_QUEUED=2") as err:
        await generate(gen)
    assert err.value.retry_after and err.value.retry_after >= 1
    gen._backend.gate.set()  # type: ignore[attr-defined]
    answers = await asyncio.gather(*waiting)
    assert all(a[-1].finished.usage.completion_tokens == 2 for a in answers)
    assert await info(gen) == (0, 0)


async def test_a_streaming_generation_no_longer_counts_as_queued(monkeypatch, tmp_path):
    gen = servicer(monkeypatch, tmp_path, queued=1)
    gen._backend.gate.set()  # type: ignore[attr-defined]
    request = generator_pb2.GenerateRequest(
        messages=[generator_pb2.ChatMessage(role="user", content="How do I roll back?")]
    )
    stream = gen.Generate(request, None)
    first = await anext(stream)
    assert first.delta == "Roll back."
    assert await info(gen) == (1, 0)
    # Its slot in the queue is free: another generation is accepted meanwhile.
    assert (await generate(gen))[-1].HasField("finished")
    await stream.aclose()
    assert await info(gen) == (0, 0)
