"""Chunking: split on headings and paragraphs within a token budget of the embedder's
own tokenizer, so that no chunk is ever silently truncated at embedding time."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import groupby

from ragplane.errors import InvalidArgument
from ragplane.gateway.loaders import LoadedDocument

# Counts tokens of many texts in one call, special tokens included ([CLS]/[SEP] for BERT).
TokenCounter = Callable[[list[str]], Awaitable[list[int]]]

MAX_VERIFY_ROUNDS = 20
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


@dataclass(frozen=True)
class ChunkDraft:
    doc_id: str
    title: str
    source: str
    section: str
    position: int
    text: str
    content_hash: str
    # What gets embedded: title and section give a chunk the context its text lacks.
    embed_text: str


@dataclass
class _Piece:
    text: str
    tokens: int  # special tokens included


def document_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def chunk_id(doc_id: str, position: int, content_hash: str) -> str:
    """Deterministic: the same document gives the same ids, so re-ingests overwrite."""
    return hashlib.sha256(f"{doc_id}\x00{position}\x00{content_hash}".encode()).hexdigest()[:32]


def embed_text(title: str, section: str, text: str) -> str:
    header = f"{title}\n{section}" if section else title
    return f"{header}\n\n{text}"


async def chunk_document(
    doc: LoadedDocument,
    *,
    doc_id: str,
    source: str,
    budget: int,
    count_tokens: TokenCounter,
) -> list[ChunkDraft]:
    """Chunks in document order; each chunk's embed_text counts at most `budget` tokens.

    Blocks of one section are packed together while they fit; a block too large alone is
    split into lines, sentences, then word windows. Sums of counts decide the packing and
    one more counting call verifies it, since subword counts do not always add up.
    """
    sections = [
        (_section_name(doc.title, path), [b.text for b in blocks])
        for path, blocks in groupby(doc.blocks, key=lambda b: b.heading_path)
    ]
    prefixes = [embed_text(doc.title, name, "") for name, _ in sections]
    texts = [t for _, blocks in sections for t in blocks]
    counts = await count_tokens(["", *prefixes])
    overhead, prefix_counts = counts[0], counts[1:]

    rooms: list[int] = []  # what one piece of each block may count alone
    for prefix_tokens, (_, blocks) in zip(prefix_counts, sections, strict=True):
        if prefix_tokens >= budget:
            raise InvalidArgument(
                f"chunk budget of {budget} tokens cannot hold the title and section of "
                f"{doc_id!r} ({prefix_tokens} tokens); raise RAGPLANE_GATEWAY_CHUNK_TOKENS"
            )
        rooms.extend([budget - prefix_tokens + overhead] * len(blocks))
    pieces = await _split_to_fit(texts, rooms, count_tokens)

    drafts: list[str] = []
    names: list[str] = []
    start = 0
    for prefix_tokens, (name, blocks) in zip(prefix_counts, sections, strict=True):
        section_pieces = [p for group in pieces[start : start + len(blocks)] for p in group]
        start += len(blocks)
        for group in _pack(section_pieces, budget - prefix_tokens, overhead):
            drafts.append("\n\n".join(p.text for p in group))
            names.append(name)
    drafts, names = await _verify(doc.title, drafts, names, budget, count_tokens)
    return [
        _draft(doc_id, doc.title, source, name, position, text)
        for position, (name, text) in enumerate(zip(names, drafts, strict=True))
    ]


def _section_name(title: str, heading_path: tuple[str, ...]) -> str:
    """Heading path below the title: the document's own H1 is its title, not a section."""
    if heading_path and heading_path[0] == title:
        heading_path = heading_path[1:]
    return " > ".join(heading_path)


def _pack(pieces: list[_Piece], room: int, overhead: int) -> list[list[_Piece]]:
    """Greedy: consecutive pieces share a chunk while their summed counts fit `room`."""
    groups: list[list[_Piece]] = []
    current: list[_Piece] = []
    used = 0
    for piece in pieces:
        cost = piece.tokens - overhead
        if current and used + cost > room:
            groups.append(current)
            current, used = [], 0
        current.append(piece)
        used += cost
    if current:
        groups.append(current)
    return groups


async def _split_to_fit(
    texts: list[str], limits: list[int], count_tokens: TokenCounter
) -> list[list[_Piece]]:
    """For each text, pieces in order that each count at most its limit (one call a level)."""
    counts = await count_tokens(texts) if texts else []
    result: list[list[_Piece]] = []
    oversized: list[int] = []
    for i, (text, tokens) in enumerate(zip(texts, counts, strict=True)):
        result.append([_Piece(text, tokens)])
        if tokens > limits[i]:
            oversized.append(i)
    if not oversized:
        return result
    parts = [_split_once(texts[i], counts[i], limits[i]) for i in oversized]
    flat = [p for group in parts for p in group]
    flat_limits = [limits[i] for i, group in zip(oversized, parts, strict=True) for _ in group]
    fitted = await _split_to_fit(flat, flat_limits, count_tokens)
    k = 0
    for i, group in zip(oversized, parts, strict=True):
        result[i] = [p for j in range(len(group)) for p in fitted[k + j]]
        k += len(group)
    return result


def _split_once(text: str, tokens: int, limit: int) -> list[str]:
    """Splits at the coarsest boundary available: lines, sentences, words, characters."""
    for pattern, joiner in (("\n", "\n"), (_SENTENCE_END, " ")):
        parts = [p for p in re.split(pattern, text) if p.strip()]
        if len(parts) > 1:
            return _group(parts, joiner, tokens / max(1, len(text)), limit)
    words = text.split()
    # Aim under the limit: the share of words the limit allows, with a margin.
    share = max(1, int(len(words) * limit * 0.9 / tokens))
    if len(words) > 1:
        share = min(share, len(words) - 1)
        return [" ".join(words[i : i + share]) for i in range(0, len(words), share)]
    chars = max(1, min(len(text) - 1, int(len(text) * limit * 0.9 / tokens)))
    return [text[i : i + chars] for i in range(0, len(text), chars)]


def _group(parts: list[str], joiner: str, tokens_per_char: float, limit: int) -> list[str]:
    """Re-joins consecutive parts while their estimated count stays well under the limit:
    one level of splitting then usually yields pieces that already fit."""
    groups: list[str] = []
    current: list[str] = []
    estimate = 0.0
    for part in parts:
        cost = len(part) * tokens_per_char
        if current and estimate + cost > limit * 0.8:
            groups.append(joiner.join(current))
            current, estimate = [], 0.0
        current.append(part)
        estimate += cost
    groups.append(joiner.join(current))
    return groups if len(groups) > 1 else parts


async def _verify(
    title: str, drafts: list[str], names: list[str], budget: int, count_tokens: TokenCounter
) -> tuple[list[str], list[str]]:
    """Counts the assembled embed_texts and re-splits any that exceed the budget."""
    for _ in range(MAX_VERIFY_ROUNDS):
        counts = await count_tokens(
            [embed_text(title, n, d) for n, d in zip(names, drafts, strict=True)]
        )
        over = [i for i, c in enumerate(counts) if c > budget]
        if not over:
            return drafts, names
        new_drafts, new_names = [], []
        for i, (draft, name) in enumerate(zip(drafts, names, strict=True)):
            if i not in over:
                new_drafts.append(draft)
                new_names.append(name)
                continue
            parts = draft.split("\n\n")
            if len(parts) == 1:
                parts = _split_once(draft, counts[i], budget)
            mid = max(1, len(parts) // 2)
            for half in (parts[:mid], parts[mid:]):
                if half:
                    new_drafts.append("\n\n".join(half))
                    new_names.append(name)
        drafts, names = new_drafts, new_names
    raise InvalidArgument(f"cannot split a chunk of {title!r} under {budget} tokens")


def _draft(
    doc_id: str, title: str, source: str, section: str, position: int, text: str
) -> ChunkDraft:
    return ChunkDraft(
        doc_id=doc_id,
        title=title,
        source=source,
        section=section,
        position=position,
        text=text,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
        embed_text=embed_text(title, section, text),
    )
