"""Prompt assembly: numbered context passages fitted to the generator's context length."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ragplane.v1 import common_pb2, generator_pb2

SYSTEM_PROMPT = (
    "Answer the question using only the context. Cite the passages you use like [1]. "
    "If the context does not contain the answer, say: I don't know."
)

DONT_KNOW = "I don't know: none of the indexed documents answers this question."

# Counts (texts, messages) -> (per-text counts, messages count) with the generator's tokenizer.
PromptCounter = Callable[
    [Sequence[str], Sequence[generator_pb2.ChatMessage]], Awaitable[tuple[list[int], int]]
]


@dataclass(frozen=True)
class FittedPrompt:
    messages: list[generator_pb2.ChatMessage]
    # The chunks given to the model, in citation order: passage [n] is context[n-1].
    context: list[common_pb2.ScoredChunk]
    prompt_tokens: int


def format_passage(index: int, chunk: common_pb2.Chunk) -> str:
    # Titles and sections travel in the citations; small models answer better from the
    # passage text alone.
    return f"[{index}] {chunk.text.strip()}"


def build_messages(question: str, passages: Sequence[str]) -> list[generator_pb2.ChatMessage]:
    context = "\n\n".join(passages) if passages else "(no passages)"
    user = f"Context:\n{context}\n\nQuestion: {question.strip()}"
    return [
        generator_pb2.ChatMessage(role="system", content=SYSTEM_PROMPT),
        generator_pb2.ChatMessage(role="user", content=user),
    ]


async def fit_prompt(
    question: str,
    candidates: Sequence[common_pb2.ScoredChunk],
    budget_tokens: int,
    count: PromptCounter,
) -> FittedPrompt:
    """Keeps the best candidates, in rank order, while the whole prompt fits the budget.

    Passage counts are summed first (one call), then the assembled prompt is counted
    exactly and shortened until it fits: chat templates do not add up token by token.
    """
    passages = [format_passage(i + 1, c.chunk) for i, c in enumerate(candidates)]
    counts, base = await count(passages, build_messages(question, []))
    keep, total = 0, base
    for n in counts:
        if total + n + 2 > budget_tokens:
            break
        total += n + 2
        keep += 1
    while True:
        messages = build_messages(question, passages[:keep])
        _, exact = await count([], messages)
        if exact <= budget_tokens or keep == 0:
            return FittedPrompt(messages, list(candidates[:keep]), exact)
        keep -= 1
