"""Chunking: split on headings and paragraphs within a token budget of the embedder's
own tokenizer, so that no chunk is ever silently truncated at embedding time."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from itertools import groupby

from ragplane.errors import InvalidArgument
from ragplane.gateway.loaders import LoadedDocument

# Counts tokens of many texts in one call, special tokens included ([CLS]/[SEP] for BERT).
TokenCounter = Callable[[list[str]], Awaitable[list[int]]]

# Each verification round splits every chunk still over budget; a few rounds always do.
MAX_VERIFY_ROUNDS = 32
_BLOCK_SEPARATOR = "\n\n"
# Coarsest first: lines (lists, code), sentences, words.
_BOUNDARIES = (re.compile(r"\n"), re.compile(r"(?<=[.!?;:])\s+"), re.compile(r"\s+"))
# Parts of a block too large for a chunk aim at a quarter of a chunk: small enough for
# packing to fill chunks well, large enough to keep counting calls light.
_PART_SHARE = 0.25
# A chunk over budget after packing is split into parts that aim this far below it.
_RESPLIT_SHARE = 0.8


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it has a vector: the fields of ragplane.v1.Chunk and its embed text."""

    doc_id: str
    title: str
    source: str
    section: str
    position: int
    text: str
    content_hash: str
    # What gets embedded: title and section give a chunk the context its text lacks.
    embed_text: str


@dataclass(frozen=True)
class _Piece:
    """A block, or a part of one too large for a chunk, with its count alone."""

    text: str
    tokens: int  # special tokens included
    section: int  # index of its section in the document
    separator: str  # what joins it to the piece before it in a chunk
    leads: bool = False  # introduces the next piece: moves to the next chunk with it


def document_hash(content: bytes) -> str:
    """sha256 hex of a whole document: equal hashes mean unchanged content."""
    return hashlib.sha256(content).hexdigest()


def chunk_id(doc_id: str, position: int, content_hash: str) -> str:
    """Deterministic: the same document gives the same ids, so re-ingests overwrite."""
    return hashlib.sha256(f"{doc_id}\x00{position}\x00{content_hash}".encode()).hexdigest()[:32]


def embed_text(title: str, section: str, text: str) -> str:
    """The text embedded for a chunk: title and section first, then the chunk text."""
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

    Consecutive blocks of one section share a chunk while their summed counts fit; a block
    too large alone is split into lines, sentences, then word windows. One call counts the
    whole document, and one more verifies the chunks, since subword counts do not always
    add up; chunks still over budget are split again until all fit.
    """
    sections = [
        (_section_name(doc.title, path), list(blocks))
        for path, blocks in groupby(doc.blocks, key=lambda b: b.heading_path)
    ]
    names = [name for name, _ in sections]
    pieces = [
        _Piece(block.text, 0, index, _BLOCK_SEPARATOR, block.leads)
        for index, (_, blocks) in enumerate(sections)
        for block in blocks
    ]
    if not pieces:
        return []
    # One call: the special tokens alone (an empty text), each section's prefix, each block.
    prefixes = [embed_text(doc.title, name, "") for name in names]
    counts = await count_tokens(["", *prefixes, *(p.text for p in pieces)])
    overhead, block_counts = counts[0], counts[1 + len(names) :]
    rooms = _rooms(counts[1 : 1 + len(names)], names, budget, doc_id)
    pieces = [replace(p, tokens=n) for p, n in zip(pieces, block_counts, strict=True)]
    pieces = await _split_oversized(pieces, rooms, overhead, count_tokens, doc_id)
    checker = _Chunks(doc.title, names, rooms, overhead, budget, doc_id)
    groups = await checker.verify(_pack(pieces, rooms, overhead), count_tokens)
    return [
        _draft(doc_id, doc.title, source, names[group[0].section], position, _joined(group))
        for position, group in enumerate(groups)
    ]


def _section_name(title: str, heading_path: tuple[str, ...]) -> str:
    """Heading path below the title: the document's own H1 is its title, not a section."""
    if heading_path and heading_path[0] == title:
        heading_path = heading_path[1:]
    return " > ".join(heading_path)


def _rooms(prefix_counts: list[int], names: list[str], budget: int, doc_id: str) -> list[int]:
    """Tokens of chunk text (special tokens excluded) each section's prefix leaves free."""
    for name, tokens in zip(names, prefix_counts, strict=True):
        if tokens >= budget:
            raise InvalidArgument(
                f"chunk budget of {budget} tokens cannot hold the title and section "
                f"{name!r} of document {doc_id!r} ({tokens} tokens); shorten them or raise "
                "RAGPLANE_GATEWAY_CHUNK_TOKENS"
            )
    return [budget - tokens for tokens in prefix_counts]


async def _split_oversized(
    pieces: list[_Piece], rooms: list[int], overhead: int, count_tokens: TokenCounter, doc_id: str
) -> list[_Piece]:
    """Splits pieces too large for a chunk until each fits alone; one call a level."""
    while True:
        result: list[_Piece] = []
        uncounted: list[int] = []
        for piece in pieces:
            room = rooms[piece.section]
            if piece.tokens - overhead <= room:
                result.append(piece)
                continue
            parts = _split(piece.text, piece.tokens - overhead, room * _PART_SHARE, doc_id)
            for k, (separator, text) in enumerate(parts):
                uncounted.append(len(result))
                if k == 0:
                    separator = piece.separator  # joins what came before, as the piece did
                leads = piece.leads and k == len(parts) - 1  # only the end leads on
                result.append(replace(piece, text=text, separator=separator, leads=leads))
        if not uncounted:
            return result
        counts = await count_tokens([result[i].text for i in uncounted])
        for i, tokens in zip(uncounted, counts, strict=True):
            result[i] = replace(result[i], tokens=tokens)
        pieces = result


def _split(text: str, tokens: int, aim: float, doc_id: str) -> list[tuple[str, str]]:
    """Splits at the coarsest boundary that has any, into (separator, part) pairs whose
    estimated counts stay under `aim`; separators keep the original whitespace."""
    per_char = tokens / max(1, len(text))
    for boundary in _BOUNDARIES:
        parts = _parts(text, boundary)
        if len(parts) > 1:
            return _regroup(parts, per_char, aim)
    if len(text) < 2:
        raise InvalidArgument(
            f"document {doc_id!r} has text that does not fit a chunk even one character at a "
            "time; shorten its title and headings or raise RAGPLANE_GATEWAY_CHUNK_TOKENS"
        )
    size = max(1, min(len(text) - 1, int(aim / per_char)))
    return [("", text[i : i + size]) for i in range(0, len(text), size)]


def _parts(text: str, boundary: re.Pattern[str]) -> list[tuple[str, str]]:
    parts: list[tuple[str, str]] = []
    pending = ""  # separator (and blank parts) before the next part
    start = 0
    for match in boundary.finditer(text):
        pending = _add_part(parts, pending, text[start : match.start()]) + match.group()
        start = match.end()
    _add_part(parts, pending, text[start:])
    return parts


def _add_part(parts: list[tuple[str, str]], separator: str, part: str) -> str:
    """Appends a non-blank part; returns the separator still waiting for one."""
    if part.strip():
        parts.append((separator, part))
        return ""
    return separator + part


def _regroup(parts: list[tuple[str, str]], per_char: float, aim: float) -> list[tuple[str, str]]:
    """Re-joins consecutive parts while their estimated count stays under `aim`."""
    groups: list[tuple[str, str]] = []
    for separator, part in parts:
        if groups and (len(groups[-1][1]) + len(separator) + len(part)) * per_char <= aim:
            first_separator, text = groups[-1]
            groups[-1] = (first_separator, text + separator + part)
        else:
            groups.append((separator, part))
    return groups if len(groups) > 1 else parts


def _pack(pieces: list[_Piece], rooms: list[int], overhead: int) -> list[list[_Piece]]:
    """Greedy: consecutive pieces of a section share a chunk while their counts fit.

    A chunk that fills up does not end with what introduces the next piece (a definition
    term, "for example:"): that moves to the next chunk with it when both fit there.
    """
    groups: list[list[_Piece]] = []
    used = 0
    for piece in pieces:
        cost = piece.tokens - overhead
        room = rooms[piece.section]
        current = groups[-1] if groups else []
        same_section = bool(current) and current[0].section == piece.section
        if same_section and used + cost <= room:
            current.append(piece)
            used += cost
            continue
        carried: list[_Piece] = []
        if same_section:
            # Keep at least one piece behind: a chunk is never emptied.
            while len(carried) + 1 < len(current) and current[-1 - len(carried)].leads:
                lead = current[-1 - len(carried)]
                if cost + lead.tokens - overhead > room:
                    break
                cost += lead.tokens - overhead
                carried.insert(0, lead)
            del current[len(current) - len(carried) :]
        groups.append([*carried, piece])
        used = cost
    return groups


@dataclass(frozen=True)
class _Chunks:
    """Verifies assembled chunks against the real count and splits those over budget."""

    title: str
    names: list[str]  # section names, by section index
    rooms: list[int]  # chunk text tokens each section leaves free
    overhead: int  # special tokens of one text
    budget: int
    doc_id: str

    async def verify(
        self, groups: list[list[_Piece]], count_tokens: TokenCounter
    ) -> list[list[_Piece]]:
        """Counts every chunk once, then only the chunks that splitting produced."""
        counts = await count_tokens([self._embed_text(g) for g in groups])
        for _ in range(MAX_VERIFY_ROUNDS):
            if all(c <= self.budget for c in counts):
                return groups
            groups, counts = self._split_over(groups, counts)
            uncounted = [i for i, c in enumerate(counts) if c < 0]
            recounted = await count_tokens([self._embed_text(groups[i]) for i in uncounted])
            for i, tokens in zip(uncounted, recounted, strict=True):
                counts[i] = tokens
        raise InvalidArgument(
            f"document {self.doc_id!r} could not be split into chunks of at most {self.budget} "
            "tokens; raise RAGPLANE_GATEWAY_CHUNK_TOKENS"
        )

    def _split_over(
        self, groups: list[list[_Piece]], counts: list[int]
    ) -> tuple[list[list[_Piece]], list[int]]:
        """Splits each chunk over budget in place of itself; new chunks count -1 (unknown)."""
        new_groups: list[list[_Piece]] = []
        new_counts: list[int] = []
        for group, tokens in zip(groups, counts, strict=True):
            if tokens <= self.budget:
                new_groups.append(group)
                new_counts.append(tokens)
            else:
                parts = self._split_group(group, tokens)
                new_groups.extend(parts)
                new_counts.extend([-1] * len(parts))
        return new_groups, new_counts

    def _split_group(self, group: list[_Piece], tokens: int) -> list[list[_Piece]]:
        """Two chunks from a chunk of several pieces; from a single piece, its parts."""
        room = self.rooms[group[0].section]
        excess = tokens - self.budget
        if len(group) > 1:
            # The sums undercounted by `excess`: keep the pieces that fit that much less.
            keep, used = 0, 0
            for piece in group[:-1]:
                used += piece.tokens - self.overhead
                if keep and used > room - excess:
                    break
                keep += 1
            return [group[:keep], group[keep:]]
        piece = group[0]
        parts = _split(piece.text, room + excess, room * _RESPLIT_SHARE, self.doc_id)
        return [
            [replace(piece, text=text, separator=sep, tokens=-1, leads=False)]
            for sep, text in parts
        ]

    def _embed_text(self, group: list[_Piece]) -> str:
        return embed_text(self.title, self.names[group[0].section], _joined(group))


def _joined(group: list[_Piece]) -> str:
    return group[0].text + "".join(p.separator + p.text for p in group[1:])


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
