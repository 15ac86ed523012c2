"""The servicer ends a looping generation itself: a finished event flagged
stopped_repeating, reason STOP, with usage, and the backend's request aborted."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import pytest

from ragplane.generator.backends import Finished, Message, ModelInfo, Sampling
from ragplane.generator.server import GeneratorServicer, GeneratorSettings
from ragplane.v1 import common_pb2, generator_pb2

STEP = "Run `kube-config rollback --service ledger-api` to roll back. "


class LoopingBackend:
    """Streams `deltas` (forever, when `forever`), then finishes."""

    name = "fake"
    info = ModelInfo("team/fake", "r1", "", 2048)

    def __init__(self, deltas: list[str], forever: bool = False) -> None:
        self.deltas = deltas
        self.forever = forever
        self.closed = False

    async def count_texts(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    async def count_messages(self, messages: Sequence[Message]) -> int:
        return 11

    async def generate(
        self, messages: Sequence[Message], sampling: Sampling
    ) -> AsyncGenerator[str | Finished, None]:
        try:
            while True:
                for delta in self.deltas:
                    yield delta
                if not self.forever:
                    yield Finished("stop", 11, len(self.deltas))
                    return
        finally:
            self.closed = True

    async def close(self) -> None: ...


def settings(monkeypatch: pytest.MonkeyPatch, tmp_path, **env: str) -> GeneratorSettings:
    monkeypatch.setenv("RAGPLANE_STATE_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return GeneratorSettings.from_env()


async def generate(servicer: GeneratorServicer) -> list[generator_pb2.GenerateResponse]:
    request = generator_pb2.GenerateRequest(
        messages=[generator_pb2.ChatMessage(role="user", content="How do I roll back?")]
    )
    return [r async for r in servicer.Generate(request, None)]


async def test_a_loop_is_stopped_and_flagged(monkeypatch, tmp_path):
    backend = LoopingBackend([w + " " for w in STEP.split()], forever=True)
    responses = await generate(GeneratorServicer(settings(monkeypatch, tmp_path), backend))
    *deltas, last = responses
    assert last.finished.stopped_repeating
    assert last.finished.finish_reason == common_pb2.FINISH_REASON_STOP
    text = "".join(d.delta for d in deltas)
    # Three copies of the nine-word step: stopped as the third one ends.
    assert text.count("kube-config") == 3
    assert last.finished.usage.prompt_tokens == 11
    assert last.finished.usage.completion_tokens == len(text.split())
    assert backend.closed


async def test_an_answer_that_ends_is_passed_through(monkeypatch, tmp_path):
    backend = LoopingBackend(["Roll back with ", "`kctl rollback` ", "[1]."])
    responses = await generate(GeneratorServicer(settings(monkeypatch, tmp_path), backend))
    assert "".join(r.delta for r in responses[:-1]) == "Roll back with `kctl rollback` [1]."
    assert not responses[-1].finished.stopped_repeating


async def test_the_detector_can_be_turned_off(monkeypatch, tmp_path):
    backend = LoopingBackend([STEP] * 6)
    servicer = GeneratorServicer(
        settings(monkeypatch, tmp_path, RAGPLANE_GENERATOR_STOP_REPEATS="0"), backend
    )
    responses = await generate(servicer)
    assert len(responses) == 7 and not responses[-1].finished.stopped_repeating
