"""The retriever's names check: which names neither the hits nor, where they miss one, a
keyword search of the corpus mention (the real path against Milvus is in
test_retriever.py)."""

from __future__ import annotations

from ragplane.names import named_terms
from ragplane.retriever.names_check import (
    MAX_CORPUS_LOOKUPS,
    unknown_names,
    unknown_terms,
    unmentioned,
)
from ragplane.retriever.schema import StoredChunk


def chunk(text: str, title: str = "", section: str = "") -> StoredChunk:
    return StoredChunk(
        id=text,
        doc_id="doc.md",
        title=title,
        source="",
        section=section,
        position=0,
        content_hash="",
        text=text,
        doc_hash="",
    )


class Corpus:
    """A keyword search over a few texts (the real one is Milvus BM25, tested through the
    retriever in test_retriever); records the queries."""

    def __init__(self, *texts: str) -> None:
        self.texts = texts
        self.queries: list[str] = []

    async def __call__(self, query: str) -> list[StoredChunk]:
        self.queries.append(query)
        words = query.lower().split()
        return [chunk(t) for t in self.texts if any(w in t.lower() for w in words)]


async def test_names_the_corpus_mentions_elsewhere_are_not_unknown():
    corpus = Corpus("Run SQL from psql.", "The pg_class catalog has relpersistence.")
    missing = ["SQL", "Patroni", "pg_class.relpersistence"]
    assert await unknown_terms(missing, corpus) == ["Patroni"]
    assert corpus.queries == ["SQL", "Patroni", "pg_class relpersistence"]


async def test_names_past_the_lookup_limit_stay_unknown():
    names = [f"Name{i}" for i in range(MAX_CORPUS_LOOKUPS + 2)]
    corpus = Corpus(*names)
    assert await unknown_terms(names, corpus) == names[MAX_CORPUS_LOOKUPS:]
    assert len(corpus.queries) == MAX_CORPUS_LOOKUPS


def test_a_table_qualified_column_is_mentioned_by_its_parts():
    hits = [chunk("relpersistence: p = permanent table, u = unlogged table", title="pg_class")]
    assert unmentioned(["u", "pg_class.relpersistence"], hits) == []
    assert unmentioned(["PGConf.EU"], [chunk("PGConf and the EU")]) == ["PGConf.EU"]


def test_names_match_across_case_punctuation_title_and_section():
    hits = [chunk("Set max_wal_senders first.", section="Streaming Replication")]
    assert unmentioned(["Max-Wal-Senders", "Streaming", "WAL", "MongoDB"], hits) == ["MongoDB"]


async def test_only_names_the_hits_miss_are_looked_up_and_in_the_request_order():
    corpus = Corpus("Patroni manages failover.")
    context = [chunk("PostgreSQL streams WAL to standbys.", title="Replication")]
    terms = ["Kubernetes", "PostgreSQL", "Patroni", "WAL"]
    assert await unknown_names(terms, context, corpus) == ["Kubernetes"]
    assert corpus.queries == ["Kubernetes", "Patroni"]


def missing(question: str, chunks: list[StoredChunk]) -> list[str]:
    """The question's names (as the gateway sends them) that the chunks do not mention."""
    return unmentioned(named_terms(question), chunks)


def test_a_name_no_hit_mentions_is_missing():
    hits = [chunk("PostgreSQL listens on port 5432.", title="Connections")]
    assert missing("What is the default port of MongoDB?", hits) == ["MongoDB"]
    assert missing("Which port does PostgreSQL use?", hits) == []


def test_names_match_across_case_punctuation_title_and_section_of_a_question():
    hits = [chunk("Set max_wal_senders first.", section="Streaming Replication")]
    assert missing("What limits Max-Wal-Senders in Streaming replication?", hits) == []
    assert missing("What is WAL?", [chunk("the wal")]) == []


def test_no_hits_leave_every_name_missing():
    assert missing("Is CockroachDB supported?", []) == ["CockroachDB"]


def test_a_table_qualified_column_is_mentioned_by_its_parts_of_a_question():
    hits = [chunk("relpersistence: p = permanent table, u = unlogged table", title="pg_class")]
    assert missing("What does u in pg_class.relpersistence mean?", hits) == []
    assert missing("When is PGConf.EU held?", [chunk("PGConf and the EU")]) == ["PGConf.EU"]
