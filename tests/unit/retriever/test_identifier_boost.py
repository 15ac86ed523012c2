"""The identifier boost's ordering, on hand-made hits (the real path against Milvus is in
test_retriever.py)."""

from __future__ import annotations

from ragplane.names import identifier_terms
from ragplane.retriever.ranking import promote_mentions
from ragplane.retriever.schema import StoredChunk
from ragplane.retriever.store import Hit

QUERY = "With target_session_attrs=read-write, what mode must the server not be in?"


def hit(text: str) -> tuple[str, Hit]:
    chunk = StoredChunk(
        id=text,
        doc_id="doc.md",
        title="",
        source="",
        section="",
        position=0,
        content_hash="",
        text=text,
        doc_hash="",
    )
    return "pg", Hit(chunk, 0.0)


def test_identifiers_count_before_hyphenated_words():
    ranked = [
        hit("The server is in hot standby mode."),
        hit("A read-write transaction in SPI."),
        hit("target_session_attrs picks a server."),
        hit("target_session_attrs=read-write needs a read-write server."),
    ]
    order = promote_mentions(
        ranked, identifier_terms(QUERY), identifier_terms(QUERY, compounds=False)
    )
    assert [h.chunk.id for _, h in order] == [
        ranked[3][1].chunk.id,  # both
        ranked[2][1].chunk.id,  # the identifier
        ranked[1][1].chunk.id,  # the compound only
        ranked[0][1].chunk.id,  # neither, retrieval order kept below
    ]
