"""The retriever against a real Milvus Lite: collections bound to a model, chunk
replacement, dense / keyword / hybrid search with filters. Vectors are synthetic: the
part under test is the store, not the embedder."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from ragplane import stack
from ragplane.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc

pytestmark = pytest.mark.integration
T = 60
DIM = 8
MODEL = common_pb2.EmbeddingModel(id="test/synthetic", revision="r1", dimension=DIM)
TEXTS = {
    "pg/replication.md": [
        "Set max_wal_senders to 10 on the primary.",
        "Streaming replication basics.",
    ],
    "pg/errors.md": ["Error 23505 is a unique_violation.", "Deadlocks raise 40P01."],
    "pg/dump.md": ["Use pg_dump --no-owner to skip ownership.", "Restore with pg_restore."],
}


def vector(seed: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=DIM)
    return (v / np.linalg.norm(v)).tolist()


def document(doc_id: str, texts: list[str], seed: int = 0) -> retriever_pb2.DocumentChunks:
    return retriever_pb2.DocumentChunks(
        doc_id=doc_id,
        chunks=[
            retriever_pb2.IndexedChunk(
                chunk=common_pb2.Chunk(
                    id=f"{doc_id}#{i}#{abs(hash(text)) % 10**8}",
                    doc_id=doc_id,
                    title=doc_id,
                    source=f"/docs/{doc_id}",
                    position=i,
                    text=text,
                    doc_hash=f"h{seed}",
                ),
                vector=vector(hash((doc_id, i)) % 1000),
            )
            for i, text in enumerate(texts)
        ],
    )


@pytest.fixture(scope="module")
def retriever(channels) -> retriever_pb2_grpc.RetrieverServiceStub:
    return retriever_pb2_grpc.RetrieverServiceStub(channels["retriever"])


@pytest.fixture(scope="module")
async def pg(retriever) -> str:
    await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name="pg", model=MODEL), timeout=T
    )
    await retriever.Upsert(
        retriever_pb2.UpsertRequest(
            collection="pg", model=MODEL, documents=[document(d, t) for d, t in TEXTS.items()]
        ),
        timeout=T,
    )
    return "pg"


async def search(retriever, mode, text="", vec=None, **fields) -> list[common_pb2.ScoredChunk]:
    reply = await retriever.Search(
        retriever_pb2.SearchRequest(
            collection="pg",
            model=MODEL,
            query_text=text,
            query_vector=vec or [],
            mode=mode,
            **fields,
        ),
        timeout=T,
    )
    return list(reply.hits)


@pytest.mark.parametrize(
    ("query", "doc_id"),
    [
        ("max_wal_senders", "pg/replication.md"),
        ("23505", "pg/errors.md"),
        ("--no-owner", "pg/dump.md"),
    ],
)
async def test_identifiers_are_found_by_keyword(retriever, pg, query, doc_id):
    hits = await search(retriever, common_pb2.SEARCH_MODE_KEYWORD, text=query)
    assert hits[0].chunk.doc_id == doc_id
    assert hits[0].chunk.source == f"/docs/{doc_id}"


async def test_dense_search_finds_the_nearest_chunk(retriever, pg):
    target = document("pg/errors.md", TEXTS["pg/errors.md"]).chunks[1]
    hits = await search(retriever, common_pb2.SEARCH_MODE_DENSE, vec=list(target.vector))
    assert hits[0].chunk.id == target.chunk.id
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)


async def test_hybrid_search_fuses_both(retriever, pg):
    target = document("pg/dump.md", TEXTS["pg/dump.md"]).chunks[1]
    hits = await search(
        retriever,
        common_pb2.SEARCH_MODE_HYBRID,
        text="max_wal_senders",
        vec=list(target.vector),
        top_k=6,
    )
    top_two = {h.chunk.id for h in hits[:2]}
    assert target.chunk.id in top_two
    assert any(h.chunk.doc_id == "pg/replication.md" for h in hits[:2])


async def test_filters_restrict_by_document_and_source_prefix(retriever, pg):
    hits = await search(
        retriever,
        common_pb2.SEARCH_MODE_KEYWORD,
        text="error replication dump restore",
        filter=common_pb2.MetadataFilter(doc_ids=["pg/dump.md"]),
        top_k=10,
    )
    assert hits and {h.chunk.doc_id for h in hits} == {"pg/dump.md"}
    hits = await search(
        retriever,
        common_pb2.SEARCH_MODE_KEYWORD,
        text="error replication dump restore",
        filter=common_pb2.MetadataFilter(source_prefix="/docs/pg/e"),
        top_k=10,
    )
    assert hits and {h.chunk.doc_id for h in hits} == {"pg/errors.md"}
    hits = await search(
        retriever,
        common_pb2.SEARCH_MODE_KEYWORD,
        text="error",
        filter=common_pb2.MetadataFilter(doc_ids=['x" or doc_id != "']),
    )
    assert hits == []  # a quote in a value cannot widen the filter


async def test_replacing_a_document_leaves_no_stale_chunks(retriever, pg):
    await retriever.Upsert(
        retriever_pb2.UpsertRequest(
            collection="pg",
            model=MODEL,
            documents=[document("tmp.md", ["a one", "b two", "c three"])],
        ),
        timeout=T,
    )
    reply = await retriever.Upsert(
        retriever_pb2.UpsertRequest(
            collection="pg",
            model=MODEL,
            documents=[document("tmp.md", ["a one", "d four"], seed=1)],
        ),
        timeout=T,
    )
    assert (reply.results[0].chunks_written, reply.results[0].chunks_deleted) == (2, 2)
    listed = await retriever.ListDocuments(
        retriever_pb2.ListDocumentsRequest(collection="pg", doc_ids=["tmp.md"]), timeout=T
    )
    assert [(d.doc_id, d.chunk_count, d.doc_hash) for d in listed.documents] == [
        ("tmp.md", 2, "h1")
    ]
    deleted = await retriever.DeleteDocument(
        retriever_pb2.DeleteDocumentRequest(collection="pg", doc_id="tmp.md"), timeout=T
    )
    assert deleted.chunks_deleted == 2
    assert not await search(retriever, common_pb2.SEARCH_MODE_KEYWORD, text="four")


async def test_create_is_idempotent_only_for_the_same_model(retriever, pg):
    again = await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name="pg", model=MODEL, exist_ok=True), timeout=T
    )
    assert not again.created and again.collection.chunk_count == 6
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await retriever.CreateCollection(
            retriever_pb2.CreateCollectionRequest(name="pg", model=MODEL), timeout=T
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    other = common_pb2.EmbeddingModel(id="test/other", revision="r9", dimension=DIM)
    for call in (
        retriever.CreateCollection(
            retriever_pb2.CreateCollectionRequest(name="pg", model=other, exist_ok=True), timeout=T
        ),
        retriever.Search(
            retriever_pb2.SearchRequest(collection="pg", model=other, query_vector=vector(1)),
            timeout=T,
        ),
        retriever.Upsert(
            retriever_pb2.UpsertRequest(
                collection="pg", model=other, documents=[document("x", ["x"])]
            ),
            timeout=T,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "test/synthetic@r1" in err.value.details() and "test/other@r9" in err.value.details()


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (retriever_pb2.SearchRequest(collection="nope", model=MODEL), grpc.StatusCode.NOT_FOUND),
        (
            retriever_pb2.SearchRequest(collection="bad name", model=MODEL),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            retriever_pb2.SearchRequest(collection="pg", model=MODEL, query_vector=[1.0, 2.0]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            retriever_pb2.SearchRequest(
                collection="pg", model=MODEL, mode=common_pb2.SEARCH_MODE_KEYWORD
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            retriever_pb2.SearchRequest(
                collection="pg",
                model=MODEL,
                query_text="x",
                mode=common_pb2.SEARCH_MODE_KEYWORD,
                top_k=101,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_bad_searches_get_clear_statuses(retriever, pg, request_, code):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await retriever.Search(request_, timeout=T)
    assert err.value.code() == code


async def test_collections_survive_a_retriever_restart(retriever, pg, running_stack):
    pid = stack.running_pid(running_stack, "retriever")
    stack.stop_process_tree(pid, timeout=30)
    await stack.up(running_stack, report=lambda _: None)
    hits = await search(retriever, common_pb2.SEARCH_MODE_KEYWORD, text="23505")
    assert hits[0].chunk.doc_id == "pg/errors.md"
