"""Prompt assembly: numbered passages, fitted to the context by counting tokens."""

from __future__ import annotations

from ragplane.gateway.prompt import build_messages, fit_prompt, format_passage
from ragplane.v1 import common_pb2


def scored(i: int, words: int) -> common_pb2.ScoredChunk:
    chunk = common_pb2.Chunk(
        id=f"c{i}", doc_id=f"d{i}", title=f"Doc {i}", section="Setup", text="word " * words
    )
    return common_pb2.ScoredChunk(chunk=chunk, score=1.0 / (i + 1))


class WordCounter:
    """Counts whitespace-separated words: a stand-in tokenizer with exact, known counts."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, texts, messages):
        self.calls += 1
        return [len(t.split()) for t in texts], sum(len(m.content.split()) for m in messages)


def test_passages_are_numbered():
    text = format_passage(3, scored(0, 2).chunk)
    assert text == "[3] word word"
    user = build_messages("Why?", [text])[1].content
    assert "[3] word word" in user and user.rstrip().endswith("Question: Why?")


def test_system_prompt_says_to_answer_only_from_context_and_admit_ignorance():
    system = build_messages("q", [])[0].content
    assert "only the context" in system and "[1]" in system and "I don't know" in system


async def test_best_chunks_are_kept_in_rank_order_until_the_budget_is_full():
    counter = WordCounter()
    candidates = [scored(i, 100) for i in range(5)]
    base = sum(len(m.content.split()) for m in build_messages("what?", []))
    fitted = await fit_prompt("what?", candidates, base + 330, counter)
    assert [c.chunk.id for c in fitted.context] == ["c0", "c1", "c2"]
    assert fitted.prompt_tokens <= base + 330
    assert counter.calls <= 3


async def test_everything_fits_when_the_budget_is_large():
    fitted = await fit_prompt("what?", [scored(i, 10) for i in range(4)], 10_000, WordCounter())
    assert len(fitted.context) == 4
    assert "[4] word" in fitted.messages[1].content


async def test_nothing_fits_when_the_question_fills_the_budget():
    fitted = await fit_prompt("long " * 50, [scored(0, 10)], 20, WordCounter())
    assert fitted.context == []
    assert fitted.prompt_tokens > 20
