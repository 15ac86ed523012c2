"""Does the retrieved context name what the question names?

A question about something the corpus never mentions (another product, a cloud
service, a setting of another database) still finds chunks that are close in meaning,
because the corpus is about the same topic: its best cosine is no lower than that of
many answerable questions, so a relevance threshold alone cannot turn it away. The
names in the question can: when the question names a thing (a proper noun, an
identifier) and none of the retrieved chunks mentions it, the context cannot answer it.
Common words are not checked: a paraphrased question rarely uses the documents' words,
and that is what dense retrieval is for. Nor are bare numbers: documents write them in
other forms (5,432; tables split from their labels), and on the evaluation sets they
turned away answerable questions and no unanswerable one (docs/retrieval.md).

A name the context misses but the corpus does mention (SQL, Python, n_dead_tup in a
PostgreSQL manual) is something the corpus knows: the question is in its domain, and
whether these chunks answer it is the generator's call. So a missing name turns the
question away only when a keyword search of the corpus finds no chunk naming it either
(unknown_terms). A table-qualified column (pg_class.relpersistence) counts as mentioned
when its parts are: documents name the column in the table's own page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

from ragplane.names import named_terms, normal
from ragplane.v1 import common_pb2, retriever_pb2

# Keyword searches of the corpus for one question's missing names; names past the limit
# count as unknown (a question naming that many things the context misses is not about it).
MAX_CORPUS_LOOKUPS = 4
# Hits each corpus lookup reads.
LOOKUP_HITS = 5

KeywordSearch = Callable[[str], Awaitable[Sequence[common_pb2.ScoredChunk]]]


def missing_terms(question: str, hits: Iterable[common_pb2.ScoredChunk]) -> list[str]:
    """The question's names that no hit's text, title or section mentions."""
    context = _context(hits)
    return [t for t in named_terms(question) if not _mentioned(t, context)]


async def unknown_terms(terms: Sequence[str], search: KeywordSearch) -> list[str]:
    """Of the names the context misses, those no chunk of the corpus mentions either:
    `search` is a keyword (BM25) search of the corpus the question was asked of."""
    checked = list(terms[:MAX_CORPUS_LOOKUPS])
    found = await asyncio.gather(*(search(lookup_query(t)) for t in checked))
    known = {t for t, hits in zip(checked, found, strict=True) if _mentioned(t, _context(hits))}
    return [t for t in terms if t not in known]


def lookup_request(
    collection: str,
    model: common_pb2.ModelIdentity,
    text: str,
    filter: common_pb2.MetadataFilter | None = None,
    extra_collections: Sequence[str] = (),
) -> retriever_pb2.SearchRequest:
    """The corpus lookup for one name: a BM25 search, never reranked, of LOOKUP_HITS."""
    return retriever_pb2.SearchRequest(
        collection=collection,
        model=model,
        query_text=text,
        mode=common_pb2.SEARCH_MODE_KEYWORD,
        filter=filter,
        top_k=LOOKUP_HITS,
        rerank=common_pb2.Rerank(mode=common_pb2.RERANK_MODE_OFF),
        extra_collections=extra_collections,
    )


def lookup_query(term: str) -> str:
    """The keyword query that finds chunks naming `term` (a qualified column by its parts)."""
    return " ".join(_parts(term))


def _context(hits: Iterable[common_pb2.ScoredChunk]) -> str:
    return normal(" ".join(f"{h.chunk.title} {h.chunk.section} {h.chunk.text}" for h in hits))


def _mentioned(term: str, context: str) -> bool:
    return all(normal(part) in context for part in _parts(term))


def _parts(term: str) -> list[str]:
    """pg_class.relpersistence is pg_class and relpersistence; PGConf.EU stays whole."""
    if "_" in term and "." in term:
        return [p for p in term.split(".") if p]
    return [term]
