"""What the retriever records of collections and documents: description, times, document
counts, pages of documents, and updates of tags, metadata and title that keep each
chunk's vector. Real Milvus Lite and retriever processes, as in test_retriever.py."""

from __future__ import annotations

import time

import grpc
import pytest

from ragplane.v1 import common_pb2, retriever_pb2
from tests.integration.retriever.test_retriever import (  # noqa: F401 - fixtures
    MODEL,
    T,
    document,
    processes,
    retriever,
    status_of,
)

DOCS = {
    "a/one.md": ["Rotate the signing keys every ninety days."],
    "b/two.md": ["The pager escalates after fifteen minutes.", "Escalation goes to the lead."],
    "c/three.md": ["Backups are restored weekly in staging."],
}


def tagged(doc_id: str, texts: list[str]) -> retriever_pb2.DocumentChunks:
    doc = document(doc_id, texts)
    for indexed in doc.chunks:
        indexed.chunk.tags.append("ops")
        indexed.chunk.metadata.update({"owner": "team-atlas"})
    return doc


@pytest.fixture(scope="module")
async def kb(retriever) -> str:  # noqa: F811
    before = time.time()
    reply = await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(
            name="kb", model=MODEL, description="Operations handbook"
        ),
        timeout=T,
    )
    assert reply.created and reply.collection.description == "Operations handbook"
    assert reply.collection.create_time.ToMilliseconds() >= int(before * 1000) - 1000
    await retriever.Upsert(
        retriever_pb2.UpsertRequest(
            collection="kb", model=MODEL, documents=[tagged(d, t) for d, t in DOCS.items()]
        ),
        timeout=T,
    )
    return "kb"


async def test_describe_counts_documents_and_records_description_and_times(retriever, kb):  # noqa: F811
    reply = await retriever.DescribeCollection(
        retriever_pb2.DescribeCollectionRequest(name=kb), timeout=T
    )
    c = reply.collection
    assert (c.description, c.chunk_count, c.document_count) == ("Operations handbook", 4, 3)
    assert c.update_time.ToMilliseconds() >= c.create_time.ToMilliseconds() > 0
    listed = await retriever.ListCollections(retriever_pb2.ListCollectionsRequest(), timeout=T)
    mine = next(x for x in listed.collections if x.name == kb)
    assert mine.description == "Operations handbook" and mine.chunk_count == 4


async def test_documents_come_a_page_at_a_time_with_tags_metadata_and_index_time(
    retriever,  # noqa: F811
    kb,
):
    first = await retriever.ListDocuments(
        retriever_pb2.ListDocumentsRequest(collection=kb, page_size=2), timeout=T
    )
    assert [d.doc_id for d in first.documents] == ["a/one.md", "b/two.md"]
    assert first.next_page_token
    two = first.documents[1]
    assert (two.chunk_count, list(two.tags), dict(two.metadata)) == (
        2,
        ["ops"],
        {"owner": "team-atlas"},
    )
    assert two.index_time.ToMilliseconds() > 0
    rest = await retriever.ListDocuments(
        retriever_pb2.ListDocumentsRequest(
            collection=kb, page_size=2, page_token=first.next_page_token
        ),
        timeout=T,
    )
    assert [d.doc_id for d in rest.documents] == ["c/three.md"] and not rest.next_page_token
    code, message = await status_of(
        retriever.ListDocuments(
            retriever_pb2.ListDocumentsRequest(collection=kb, page_token="%%%"), timeout=T
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in message


async def test_an_update_rewrites_tags_metadata_and_title_but_keeps_the_vectors(
    retriever,  # noqa: F811
    kb,
):
    original = document("b/two.md", DOCS["b/two.md"]).chunks[1]
    patch = common_pb2.DocumentPatch(
        tags=common_pb2.StringList(values=["oncall", "paging"]),
        metadata=common_pb2.StringMap(entries={"owner": "team-foundry", "url": "https://x"}),
        title="Pager escalation",
    )
    reply = await retriever.UpdateDocument(
        retriever_pb2.UpdateDocumentRequest(collection=kb, doc_id="b/two.md", patch=patch),
        timeout=T,
    )
    doc = reply.document
    assert (doc.title, list(doc.tags), doc.chunk_count) == (
        "Pager escalation",
        ["oncall", "paging"],
        2,
    )
    assert dict(doc.metadata) == {"owner": "team-foundry", "url": "https://x"}
    # The same vector finds the same chunk, now carrying the new tag and title.
    found = await retriever.Search(
        retriever_pb2.SearchRequest(
            collection=kb,
            model=MODEL,
            query_vector=original.vector,
            mode=common_pb2.SEARCH_MODE_DENSE,
            filter=common_pb2.MetadataFilter(tags=["paging"]),
            top_k=1,
        ),
        timeout=T,
    )
    hit = found.hits[0]
    assert hit.chunk.id == original.chunk.id and hit.relevance == pytest.approx(1.0, abs=1e-5)
    assert hit.chunk.title == "Pager escalation" and hit.chunk.text == original.chunk.text
    # BM25 reads the new title too.
    by_title = await retriever.Search(
        retriever_pb2.SearchRequest(
            collection=kb, model=MODEL, query_text="Pager", mode=common_pb2.SEARCH_MODE_KEYWORD
        ),
        timeout=T,
    )
    assert {h.chunk.doc_id for h in by_title.hits} == {"b/two.md"}
    # Unset fields stay.
    again = await retriever.UpdateDocument(
        retriever_pb2.UpdateDocumentRequest(
            collection=kb, doc_id="b/two.md", patch=common_pb2.DocumentPatch(title="Paging")
        ),
        timeout=T,
    )
    assert list(again.document.tags) == ["oncall", "paging"] and again.document.title == "Paging"


async def test_updating_an_unknown_document_or_changing_nothing_is_refused(retriever, kb):  # noqa: F811
    code, message = await status_of(
        retriever.UpdateDocument(
            retriever_pb2.UpdateDocumentRequest(
                collection=kb, doc_id="no/such.md", patch=common_pb2.DocumentPatch(title="x")
            ),
            timeout=T,
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND and "no/such.md" in message
    code, message = await status_of(
        retriever.UpdateDocument(
            retriever_pb2.UpdateDocumentRequest(collection=kb, doc_id="a/one.md"), timeout=T
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "changes nothing" in message


async def test_a_document_missing_chunks_is_reported_changed(retriever, processes):  # noqa: F811
    """A write cut short between two upsert batches (the retriever or Milvus killed) leaves
    some of a document's chunks: the document is then listed with no hash, so the next
    ingest writes it whole rather than skipping it as unchanged."""
    from pymilvus import MilvusClient

    await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name="cut", model=MODEL), timeout=T
    )
    doc = document("cut.md", ["First part.", "Second part.", "Third part."], doc_hash="h1")
    await retriever.Upsert(
        retriever_pb2.UpsertRequest(collection="cut", model=MODEL, documents=[doc]), timeout=T
    )
    request = retriever_pb2.ListDocumentsRequest(collection="cut", doc_ids=["cut.md"])
    whole = (await retriever.ListDocuments(request, timeout=T)).documents
    assert [(d.doc_hash, d.chunk_count) for d in whole] == [("h1", 3)]
    client = MilvusClient(uri=processes.milvus_uri)
    try:
        client.delete("cut", ids=[doc.chunks[2].chunk.id])
    finally:
        client.close()
    cut = (await retriever.ListDocuments(request, timeout=T)).documents
    assert [(d.doc_hash, d.chunk_count) for d in cut] == [("", 2)]
    # Written again whole, it is whole again.
    await retriever.Upsert(
        retriever_pb2.UpsertRequest(collection="cut", model=MODEL, documents=[doc]), timeout=T
    )
    again = (await retriever.ListDocuments(request, timeout=T)).documents
    assert [(d.doc_hash, d.chunk_count) for d in again] == [("h1", 3)]
