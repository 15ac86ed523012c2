"""Which of a question's names (proper nouns, identifiers) the corpus does not know.

A question about something the corpus never mentions still finds chunks close in
meaning, so the gateway turns it away when the context names none of what it names. But
a name the context misses and the corpus mentions elsewhere (SQL, Python, n_dead_tup in
a PostgreSQL manual) is something the corpus knows: the question is in its domain. So a
name the hits do not mention is looked up with a keyword (BM25) search of the same
collections, under the same filter, and only names no chunk mentions are unknown. A
table-qualified column (pg_class.relpersistence) counts as mentioned when its parts are:
documents name the column in the table's own page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

from ragplane.names import normal
from ragplane.retriever.schema import StoredChunk

# Keyword searches of the corpus for one request's unmentioned names; names past the
# limit count as unknown (a question naming that many things the context misses is not
# about it).
MAX_CORPUS_LOOKUPS = 4
# Hits each corpus lookup reads.
LOOKUP_HITS = 5

# A keyword (BM25) search of the corpus the question was asked of: its LOOKUP_HITS best.
KeywordSearch = Callable[[str], Awaitable[Sequence[StoredChunk]]]


async def unknown_names(
    terms: Sequence[str], context: Sequence[StoredChunk], search: KeywordSearch
) -> list[str]:
    """Of the terms, those neither the context nor, where it misses them, the corpus
    mentions, in their order."""
    return await unknown_terms(unmentioned(terms, context), search)


def unmentioned(terms: Sequence[str], chunks: Iterable[StoredChunk]) -> list[str]:
    """The terms no chunk's title, section or text mentions."""
    text = context_of(chunks)
    return [t for t in terms if not mentioned(t, text)]


async def unknown_terms(terms: Sequence[str], search: KeywordSearch) -> list[str]:
    """Of the names the context misses, those no chunk of the corpus mentions either;
    only the first MAX_CORPUS_LOOKUPS are looked up."""
    checked = list(terms[:MAX_CORPUS_LOOKUPS])
    found = await asyncio.gather(*(search(lookup_query(t)) for t in checked))
    known = {t for t, hits in zip(checked, found, strict=True) if mentioned(t, context_of(hits))}
    return [t for t in terms if t not in known]


def lookup_query(term: str) -> str:
    """The keyword query that finds chunks naming `term` (a qualified column by its parts)."""
    return " ".join(parts(term))


def context_of(chunks: Iterable[StoredChunk]) -> str:
    """The chunks' titles, sections and texts as one text names are matched in."""
    return "".join(c.named_text() for c in chunks)


def mentioned(term: str, context: str) -> bool:
    """Whether every part of `term` is in `context` (a context_of text)."""
    return all(normal(part) in context for part in parts(term))


def parts(term: str) -> list[str]:
    """pg_class.relpersistence is pg_class and relpersistence; PGConf.EU stays whole."""
    if "_" in term and "." in term:
        return [p for p in term.split(".") if p]
    return [term]
