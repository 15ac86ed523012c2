"""The identifier boost's ordering, on hand-made hits (the real path against Milvus is in
test_retriever.py)."""

from __future__ import annotations

from ragplane.names import identifier_terms
from ragplane.retriever.server import promote_mentions
from ragplane.retriever.store import Hit

QUERY = "With target_session_attrs=read-write, what mode must the server not be in?"


def hit(text: str) -> tuple[str, Hit]:
    return "pg", Hit({"id": text, "title": "", "section": "", "text": text}, 0.0)


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
    assert [h.fields["id"] for _, h in order] == [
        ranked[3][1].fields["id"],  # both
        ranked[2][1].fields["id"],  # the identifier
        ranked[1][1].fields["id"],  # the compound only
        ranked[0][1].fields["id"],  # neither, retrieval order kept below
    ]
