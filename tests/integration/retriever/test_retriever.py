"""The retriever against a real Milvus Lite server, both as processes, driven over gRPC.

Vectors are synthetic unit vectors (dim 8): the part under test is the retriever and
Milvus, not the embedder. BM25 scores differ in sign between Milvus Lite and a Milvus
server, so keyword tests assert rankings, never scores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from pymilvus import DataType, Function, FunctionType, MilvusClient

from ragplane.ops.milvus_lite import start_milvus_lite
from ragplane.ops.processes import Process, free_port, start_process
from ragplane.retriever import schema, store
from ragplane.retriever.settings import PLAIN_DENSE_WEIGHT
from ragplane.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc

T = 30  # deadline of every call, seconds
DIM = 8
MODEL = common_pb2.ModelIdentity(
    id="test/synthetic", revision="r1", weights_sha256="ab" * 32, dimension=DIM
)
OTHER_MODEL = common_pb2.ModelIdentity(id="test/other", revision="r9", dimension=DIM)
WIDER_MODEL = common_pb2.ModelIdentity(id="test/synthetic", revision="r1", dimension=16)
QUOTED_DOC = 'notes/it\'s "quoted".md'
CORPUS = {
    "pg/replication.md": [
        "Set max_wal_senders to 10 on the primary before adding replicas.",
        "Streaming replication ships WAL records to standbys.",
    ],
    "pg/errors.md": [
        "Error 23505 is a unique_violation raised by a duplicate key.",
        "Deadlocks raise SQLSTATE 40P01 and the transaction is retried.",
    ],
    "pg/dump.md": [
        "Run pg_dump --no-owner so the restore does not need the original roles.",
        "Restore the archive with pg_restore into an empty database.",
    ],
    "ops_x/notes.md": ["The owner of the pager rotation is listed in the on-call sheet."],
    "opsAx/notes.md": ["There is no standby for the billing database."],
    QUOTED_DOC: ["Quoted document about failover drills."],
}


def source_of(doc_id: str) -> str:
    return f"/handbook/{doc_id}"


def vector(*key: object) -> list[float]:
    """A deterministic random unit vector for a key."""
    seed = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "big")
    v = np.random.default_rng(seed).normal(size=DIM)
    return (v / np.linalg.norm(v)).tolist()


def chunk_id(doc_id: str, position: int, text: str) -> str:
    return hashlib.sha256(f"{doc_id}\x00{position}\x00{text}".encode()).hexdigest()[:32]


def document(doc_id: str, texts: list[str], doc_hash: str = "v1") -> retriever_pb2.DocumentChunks:
    return retriever_pb2.DocumentChunks(
        doc_id=doc_id,
        chunks=[
            retriever_pb2.IndexedChunk(
                chunk=common_pb2.Chunk(
                    id=chunk_id(doc_id, i, text),
                    doc_id=doc_id,
                    title=f"Title of {doc_id}",
                    source=source_of(doc_id),
                    section=f"Section {i}",
                    position=i,
                    content_hash=hashlib.sha256(text.encode()).hexdigest(),
                    text=text,
                    doc_hash=doc_hash,
                ),
                vector=vector(doc_id, i, text),
            )
            for i, text in enumerate(texts)
        ],
    )


# Processes -----------------------------------------------------------------------


@dataclass
class Processes:
    """Milvus Lite and the retriever as real processes; either can be restarted."""

    workdir: Path
    milvus_port: int = field(default_factory=free_port)
    retriever_port: int = field(default_factory=free_port)
    milvus: Process | None = None
    retriever: Process | None = None
    # Settings on top of the test's environment, e.g. the reranker's.
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def milvus_uri(self) -> str:
        return f"http://127.0.0.1:{self.milvus_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.retriever_port}"

    @property
    def retriever_log(self) -> Path:
        return self.workdir / "retriever.log"

    async def start_milvus(self) -> None:
        self.milvus = await start_milvus_lite(
            self.workdir / "milvus", self.milvus_port, self.workdir / "milvus.log"
        )

    def stop_milvus(self) -> None:
        if self.milvus is not None:
            self.milvus.stop(timeout=10)
            self.milvus = None

    async def start_retriever(self) -> None:
        """Starts the retriever and waits until it serves; raises (a RuntimeError with its
        log's tail) if it exits first."""
        env = {
            **os.environ,
            "RAGPLANE_RETRIEVER_ADDR": self.address,
            "RAGPLANE_RETRIEVER_METRICS_ADDR": "127.0.0.1:0",
            "RAGPLANE_MILVUS_URI": self.milvus_uri,
            "RAGPLANE_MILVUS_TIMEOUT_SECONDS": "10",
            "RAGPLANE_SHUTDOWN_GRACE_SECONDS": "1",
            "RAGPLANE_STATE_DIR": str(self.workdir),
            **self.extra_env,
        }
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        self.retriever = start_process(
            [sys.executable, "-m", "ragplane.retriever.server"],
            self.retriever_log,
            env=env,
            name="retriever",
        )
        await self.retriever.wait_serving(self.address, within_s=90)

    def stop_retriever(self) -> None:
        if self.retriever is not None:
            self.retriever.stop(timeout=15)
            self.retriever = None


@pytest.fixture(scope="module")
async def processes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Processes]:
    procs = Processes(tmp_path_factory.mktemp("retriever"))
    await procs.start_milvus()
    try:
        await procs.start_retriever()
        yield procs
    finally:
        procs.stop_retriever()
        procs.stop_milvus()


@pytest.fixture(scope="module")
async def retriever(processes: Processes) -> AsyncIterator[retriever_pb2_grpc.RetrieverServiceStub]:
    async with grpc.aio.insecure_channel(processes.address) as channel:
        yield retriever_pb2_grpc.RetrieverServiceStub(channel)


@pytest.fixture(scope="module")
async def pg(retriever) -> str:
    """A collection holding CORPUS."""
    await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name="pg", model=MODEL), timeout=T
    )
    reply = await retriever.Upsert(
        retriever_pb2.UpsertRequest(
            collection="pg", model=MODEL, documents=[document(d, t) for d, t in CORPUS.items()]
        ),
        timeout=T,
    )
    assert [(r.chunks_written, r.chunks_deleted) for r in reply.results] == [
        (len(t), 0) for t in CORPUS.values()
    ]
    return "pg"


def chunk_of(doc_id: str, position: int) -> retriever_pb2.IndexedChunk:
    return document(doc_id, CORPUS[doc_id]).chunks[position]


def chunk_vector(chunk_id: str) -> list[float]:
    for doc_id, texts in CORPUS.items():
        for indexed in document(doc_id, texts).chunks:
            if indexed.chunk.id == chunk_id:
                return list(indexed.vector)
    raise KeyError(chunk_id)


async def search(stub, collection: str = "pg", **fields) -> list[common_pb2.ScoredChunk]:
    reply = await stub.Search(
        retriever_pb2.SearchRequest(
            collection=collection, model=fields.pop("model", MODEL), **fields
        ),
        timeout=T,
    )
    assert reply.timing.compute_ms > 0
    return list(reply.hits)


async def keyword(stub, text: str, **fields) -> list[common_pb2.ScoredChunk]:
    return await search(stub, query_text=text, mode=common_pb2.SEARCH_MODE_KEYWORD, **fields)


async def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details() or ""


# Collections ---------------------------------------------------------------------


async def test_create_describe_drop(retriever):
    created = await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name="scratch", model=MODEL), timeout=T
    )
    assert created.created
    described = await retriever.DescribeCollection(
        retriever_pb2.DescribeCollectionRequest(name="scratch"), timeout=T
    )
    assert described.collection.model == MODEL
    assert (described.collection.name, described.collection.chunk_count) == ("scratch", 0)
    await retriever.DropCollection(retriever_pb2.DropCollectionRequest(name="scratch"), timeout=T)
    for call in (
        retriever.DescribeCollection(
            retriever_pb2.DescribeCollectionRequest(name="scratch"), timeout=T
        ),
        retriever.DropCollection(retriever_pb2.DropCollectionRequest(name="scratch"), timeout=T),
    ):
        assert await status_of(call) == (
            grpc.StatusCode.NOT_FOUND,
            "collection 'scratch' does not exist",
        )


async def test_list_collections_gives_ragplanes_by_name_with_model_and_size(
    retriever, pg, processes
):
    client = MilvusClient(uri=processes.milvus_uri, timeout=T)
    try:
        client.create_collection("foreign", dimension=4, timeout=T)  # records no model
    finally:
        client.close()
    await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name="listed", model=OTHER_MODEL), timeout=T
    )
    try:
        reply = await retriever.ListCollections(retriever_pb2.ListCollectionsRequest(), timeout=T)
    finally:
        await retriever.DropCollection(
            retriever_pb2.DropCollectionRequest(name="listed"), timeout=T
        )
        await asyncio.to_thread(drop_directly, processes.milvus_uri, "foreign")
    names = [c.name for c in reply.collections]
    assert names == sorted(names)
    assert {"pg", "listed"} <= set(names)
    assert "foreign" not in names
    by_name = {c.name: c for c in reply.collections}
    described = await retriever.DescribeCollection(
        retriever_pb2.DescribeCollectionRequest(name=pg), timeout=T
    )
    assert by_name[pg] == described.collection
    assert by_name[pg].chunk_count == sum(len(t) for t in CORPUS.values())
    assert (by_name["listed"].model, by_name["listed"].chunk_count) == (OTHER_MODEL, 0)


async def test_list_collections_by_prefix_counts_only_those_named_with_it(retriever, pg):
    await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name="pre__listed", model=OTHER_MODEL), timeout=T
    )
    try:
        prefixed = await retriever.ListCollections(
            retriever_pb2.ListCollectionsRequest(name_prefix="pre__"), timeout=T
        )
        chunks_only = await retriever.ListCollections(
            retriever_pb2.ListCollectionsRequest(name_prefix=pg, skip_document_count=True),
            timeout=T,
        )
    finally:
        await retriever.DropCollection(
            retriever_pb2.DropCollectionRequest(name="pre__listed"), timeout=T
        )
    assert [c.name for c in prefixed.collections] == ["pre__listed"]
    (counted,) = [c for c in chunks_only.collections if c.name == pg]
    assert counted.chunk_count == sum(len(t) for t in CORPUS.values())
    assert counted.document_count == 0


def drop_directly(uri: str, collection: str) -> None:
    client = MilvusClient(uri=uri, timeout=T)
    try:
        client.drop_collection(collection, timeout=T)
    finally:
        client.close()


async def test_create_is_idempotent_only_with_exist_ok_and_the_same_model(retriever, pg):
    again = await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name=pg, model=MODEL, exist_ok=True), timeout=T
    )
    assert not again.created
    assert again.collection.model == MODEL
    assert again.collection.chunk_count == sum(len(t) for t in CORPUS.values())

    code, _ = await status_of(
        retriever.CreateCollection(
            retriever_pb2.CreateCollectionRequest(name=pg, model=MODEL), timeout=T
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS

    code, message = await status_of(
        retriever.CreateCollection(
            retriever_pb2.CreateCollectionRequest(name=pg, model=OTHER_MODEL, exist_ok=True),
            timeout=T,
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "test/synthetic@r1 (8-d)" in message and "test/other@r9 (8-d)" in message


@pytest.mark.parametrize("model", [OTHER_MODEL, WIDER_MODEL], ids=["other-model", "other-dim"])
async def test_vectors_from_another_model_are_refused(retriever, pg, model):
    wrong = [0.1] * model.dimension
    calls = [
        retriever.Upsert(
            retriever_pb2.UpsertRequest(
                collection=pg,
                model=model,
                documents=[
                    retriever_pb2.DocumentChunks(
                        doc_id="x.md",
                        chunks=[
                            retriever_pb2.IndexedChunk(
                                chunk=common_pb2.Chunk(id="x", doc_id="x.md", text="x"),
                                vector=wrong,
                            )
                        ],
                    )
                ],
            ),
            timeout=T,
        ),
        retriever.Search(
            retriever_pb2.SearchRequest(
                collection=pg, model=model, query_vector=wrong, query_text="replication"
            ),
            timeout=T,
        ),
    ]
    for call in calls:
        code, message = await status_of(call)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "collection 'pg' was indexed with test/synthetic@r1 (8-d)" in message
        assert f"{model.id}@{model.revision} ({model.dimension}-d)" in message
    listed = await retriever.ListDocuments(
        retriever_pb2.ListDocumentsRequest(collection=pg, doc_ids=["x.md"]), timeout=T
    )
    assert not listed.documents


# Search --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "doc_id"),
    [
        ("max_wal_senders", "pg/replication.md"),
        ("MAX_WAL_SENDERS", "pg/replication.md"),
        ("23505", "pg/errors.md"),
        ("--no-owner", "pg/dump.md"),
        ("40P01", "pg/errors.md"),
    ],
)
async def test_identifiers_are_found_by_keyword(retriever, pg, query, doc_id):
    hits = await keyword(retriever, query)
    assert hits, f"nothing found for {query!r}"
    assert hits[0].chunk.doc_id == doc_id


async def test_keyword_hits_carry_the_whole_chunk(retriever, pg):
    hits = await keyword(retriever, "max_wal_senders")
    expected = chunk_of("pg/replication.md", 0).chunk
    assert hits[0].chunk == expected


async def test_keyword_ranks_the_chunk_matching_more_terms_first(retriever, pg):
    # "no" and "owner" each appear alone elsewhere; only pg_dump's chunk has both.
    hits = await keyword(retriever, "no owner", top_k=10)
    assert hits[0].chunk.doc_id == "pg/dump.md"
    assert {"ops_x/notes.md", "opsAx/notes.md"} <= {h.chunk.doc_id for h in hits[1:]}


def titled(doc_id: str, title: str, sections_and_texts: list[tuple[str, str]]):
    doc = document(doc_id, [text for _, text in sections_and_texts])
    for indexed, (section, _) in zip(doc.chunks, sections_and_texts, strict=True):
        indexed.chunk.title, indexed.chunk.section = title, section
    return doc


REFERENCE = [
    titled("ref/truncate.md", "TRUNCATE", [("Synopsis", "Empties a set of tables quickly.")]),
    titled("ref/vacuum.md", "VACUUM", [("Notes", "Garbage-collects a table; see truncate.")]),
]


async def upsert(stub, collection: str, documents) -> None:
    await stub.Upsert(
        retriever_pb2.UpsertRequest(collection=collection, model=MODEL, documents=documents),
        timeout=T,
    )


async def test_keyword_search_reads_titles_and_sections(retriever):
    # A reference page's name is its title: the chunk titled TRUNCATE outranks the one
    # whose text only mentions it, and a section's words find its chunk.
    await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name="titled", model=MODEL), timeout=T
    )
    await upsert(retriever, "titled", REFERENCE)
    hits = await keyword(retriever, "truncate", collection="titled")
    assert [h.chunk.doc_id for h in hits] == ["ref/truncate.md", "ref/vacuum.md"]
    hits = await keyword(retriever, "synopsis", collection="titled")
    assert [h.chunk.doc_id for h in hits] == ["ref/truncate.md"]
    assert hits[0].chunk == REFERENCE[0].chunks[0].chunk  # keywords are not returned


async def test_collections_of_schema_2_still_serve_with_bm25_over_the_text(retriever, processes):
    """Collections created before the keywords field keep working as they were."""
    client = MilvusClient(uri=processes.milvus_uri)
    fields = client.create_schema(auto_id=False, enable_dynamic_field=False)
    fields.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    for name in ("doc_id", "doc_hash", "title", "source", "section", "content_hash"):
        fields.add_field(name, DataType.VARCHAR, max_length=2048)
    fields.add_field("position", DataType.INT64)
    fields.add_field(
        "text",
        DataType.VARCHAR,
        max_length=65535,
        enable_analyzer=True,
        analyzer_params=schema.TEXT_ANALYZER,
    )
    fields.add_field(
        "tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=32, max_length=128
    )
    fields.add_field(schema.SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
    fields.add_field(schema.DENSE_FIELD, DataType.FLOAT_VECTOR, dim=DIM)
    fields.add_function(
        Function(
            name="text_bm25",
            function_type=FunctionType.BM25,
            input_field_names=["text"],
            output_field_names=[schema.SPARSE_FIELD],
        )
    )
    index = client.prepare_index_params()
    index.add_index(schema.DENSE_FIELD, index_type="AUTOINDEX", metric_type="COSINE")
    index.add_index(schema.SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    record = store.ModelRecord(MODEL.id, MODEL.revision, MODEL.weights_sha256, MODEL.dimension)
    client.create_collection(
        "schema2",
        schema=fields,
        index_params=index,
        consistency_level="Strong",
        properties={
            schema.MODEL_PROPERTY: json.dumps(dataclasses.asdict(record)),
            schema.SCHEMA_PROPERTY: "2",
        },
    )
    client.close()
    await upsert(retriever, "schema2", REFERENCE)
    hits = await keyword(retriever, "truncate", collection="schema2")
    assert [h.chunk.doc_id for h in hits] == ["ref/vacuum.md"]  # its text names it
    assert not await keyword(retriever, "synopsis", collection="schema2")


async def test_dense_search_finds_the_nearest_chunk(retriever, pg):
    target = chunk_of("pg/errors.md", 1)
    hits = await search(
        retriever, query_vector=target.vector, mode=common_pb2.SEARCH_MODE_DENSE, top_k=3
    )
    assert len(hits) == 3
    assert hits[0].chunk.id == target.chunk.id
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)  # cosine similarity
    assert hits[0].score > hits[1].score >= hits[2].score


async def test_hybrid_fuses_dense_and_keyword_and_is_the_default(retriever, pg):
    near = chunk_of("pg/dump.md", 1)  # the dense side's best
    named = chunk_of("pg/replication.md", 0)  # the keyword side's only match
    rankings = []
    for mode in (common_pb2.SEARCH_MODE_HYBRID, common_pb2.SEARCH_MODE_UNSPECIFIED):
        hits = await search(
            retriever, query_vector=near.vector, query_text="max_wal_senders", mode=mode, top_k=4
        )
        rankings.append([h.chunk.id for h in hits])
    # Reciprocal rank fusion: the keyword match also ranks somewhere in the dense list.
    assert rankings[0][:2] == [named.chunk.id, near.chunk.id]
    assert rankings[0] == rankings[1]


async def test_a_plain_language_query_fuses_dense_weighted_by_default(retriever, pg):
    # Query-adaptive fusion: a query naming no identifier is fused by weight, dense
    # search counting PLAIN_DENSE_WEIGHT; one naming an identifier by RRF (test above).
    near = chunk_of("pg/dump.md", 1)
    query = dict(query_vector=near.vector, query_text="restore into an empty database", top_k=4)
    weights = dict(dense_weight=PLAIN_DENSE_WEIGHT, keyword_weight=1 - PLAIN_DENSE_WEIGHT)
    by_fusion = {}
    for name, fusion in (
        ("default", common_pb2.Fusion()),
        ("weighted", common_pb2.Fusion(method=common_pb2.FUSION_METHOD_WEIGHTED, **weights)),
        ("rrf", common_pb2.Fusion(method=common_pb2.FUSION_METHOD_RRF)),
    ):
        hits = await search(retriever, fusion=fusion, **query)
        by_fusion[name] = [(h.chunk.id, h.score) for h in hits]
    assert by_fusion["default"][0][0] == near.chunk.id
    assert [i for i, _ in by_fusion["default"]] == [i for i, _ in by_fusion["weighted"]]
    assert [s for _, s in by_fusion["default"]] == pytest.approx(
        [s for _, s in by_fusion["weighted"]], abs=1e-5
    )
    assert [s for _, s in by_fusion["default"]] != pytest.approx(
        [s for _, s in by_fusion["rrf"]], abs=1e-5
    )


# Many of the query's words are in the unique_violation chunk; only its identifier,
# 40P01, is in the deadlock chunk.
WORDY_QUERY = "which duplicate key error is raised by a key or 40P01"
OFF, ON = common_pb2.IDENTIFIER_BOOST_OFF, common_pb2.IDENTIFIER_BOOST_ON


@pytest.mark.parametrize("mode", [common_pb2.SEARCH_MODE_KEYWORD, common_pb2.SEARCH_MODE_HYBRID])
async def test_the_chunk_naming_the_identifier_ranks_first(retriever, pg, mode):
    wordy, named = chunk_of("pg/errors.md", 0), chunk_of("pg/errors.md", 1)
    query = dict(query_vector=wordy.vector, query_text=WORDY_QUERY, mode=mode, top_k=2)
    plain = await search(retriever, identifier_boost=OFF, **query)
    assert plain[0].chunk.id == wordy.chunk.id
    for boost in (ON, common_pb2.IDENTIFIER_BOOST_UNSPECIFIED):  # on by default
        boosted = await search(retriever, identifier_boost=boost, **query)
        assert [h.chunk.id for h in boosted] == [named.chunk.id, wordy.chunk.id]


async def test_dense_search_ignores_the_identifier_boost(retriever, pg):
    wordy = chunk_of("pg/errors.md", 0)
    query = dict(
        query_vector=wordy.vector,
        query_text=WORDY_QUERY,
        mode=common_pb2.SEARCH_MODE_DENSE,
        top_k=3,
    )
    rankings = [
        [h.chunk.id for h in await search(retriever, identifier_boost=boost, **query)]
        for boost in (OFF, ON)
    ]
    assert rankings[0][0] == wordy.chunk.id
    assert rankings[0] == rankings[1]


@pytest.mark.parametrize(
    "mode",
    [common_pb2.SEARCH_MODE_DENSE, common_pb2.SEARCH_MODE_KEYWORD, common_pb2.SEARCH_MODE_HYBRID],
)
async def test_relevance_is_the_query_chunk_cosine_in_every_mode(retriever, pg, mode):
    target = chunk_of("pg/replication.md", 0)
    hits = await search(
        retriever, query_vector=target.vector, query_text="max_wal_senders", mode=mode, top_k=5
    )
    by_id = {h.chunk.id: h for h in hits}
    assert by_id[target.chunk.id].relevance == pytest.approx(1.0, abs=1e-4)
    for hit in hits:
        expected = float(np.dot(target.vector, chunk_vector(hit.chunk.id)))
        assert hit.relevance == pytest.approx(expected, abs=1e-4)


async def test_top_k_defaults_to_five(retriever, pg):
    hits = await search(
        retriever, query_vector=vector("any"), mode=common_pb2.SEARCH_MODE_DENSE, top_k=0
    )
    assert len(hits) == 5


async def test_filter_by_documents(retriever, pg):
    hits = await keyword(
        retriever,
        "replication error dump restore standby",
        filter=common_pb2.MetadataFilter(doc_ids=["pg/dump.md", "pg/errors.md"]),
        top_k=20,
    )
    assert {h.chunk.doc_id for h in hits} == {"pg/dump.md", "pg/errors.md"}


async def test_filter_by_source_prefix_matches_literally(retriever, pg):
    # "_" must not act as a LIKE wildcard: /handbook/opsAx/ must stay out.
    hits = await search(
        retriever,
        query_vector=vector("anything"),
        query_text="owner standby database",
        filter=common_pb2.MetadataFilter(source_prefix="/handbook/ops_x/"),
        top_k=20,
    )
    assert {h.chunk.doc_id for h in hits} == {"ops_x/notes.md"}
    hits = await search(
        retriever,
        query_vector=vector("anything"),
        mode=common_pb2.SEARCH_MODE_DENSE,
        filter=common_pb2.MetadataFilter(source_prefix="/handbook/pg/", doc_ids=["pg/dump.md"]),
        top_k=20,
    )
    assert [h.chunk.doc_id for h in hits] == ["pg/dump.md"] * 2


async def test_quotes_in_filter_values_cannot_widen_the_filter(retriever, pg):
    for mode in (common_pb2.SEARCH_MODE_DENSE, common_pb2.SEARCH_MODE_KEYWORD):
        hits = await search(
            retriever,
            query_vector=vector("q"),
            query_text="database",
            mode=mode,
            filter=common_pb2.MetadataFilter(doc_ids=['x" or doc_id != "', "y' or '1'=='1"]),
            top_k=20,
        )
        assert hits == []
    hits = await search(
        retriever,
        query_vector=vector("q"),
        mode=common_pb2.SEARCH_MODE_DENSE,
        filter=common_pb2.MetadataFilter(doc_ids=[QUOTED_DOC], source_prefix=source_of(QUOTED_DOC)),
        top_k=20,
    )
    assert [h.chunk.doc_id for h in hits] == [QUOTED_DOC]


# Names check ---------------------------------------------------------------------


async def unknown_names(stub, terms: list[str], **fields) -> list[str]:
    """The names of `terms` a search's name check reports unknown."""
    fields = {"collection": "pg", "model": MODEL, **fields}
    context_hits = fields.pop("context_hits", 0)
    request = retriever_pb2.SearchRequest(**fields)
    request.name_check.terms.extend(terms)
    request.name_check.context_hits = context_hits
    reply = await stub.Search(request, timeout=T)
    return list(reply.unknown_terms)


async def test_names_in_the_hits_or_elsewhere_in_the_collection_are_known(retriever, pg):
    target = chunk_of("pg/replication.md", 0)
    query = dict(query_vector=target.vector, query_text="max_wal_senders", top_k=1)
    # In the hit, only in pg/dump.md, nowhere, nowhere: the unknown ones in request order.
    terms = ["CockroachDB", "max_wal_senders", "pg_restore", "Kubernetes"]
    request = retriever_pb2.SearchRequest(collection=pg, model=MODEL, **query)
    request.name_check.terms.extend(terms)
    reply = await retriever.Search(request, timeout=T)
    assert list(reply.unknown_terms) == ["CockroachDB", "Kubernetes"]
    assert [h.chunk.id for h in reply.hits] == [target.chunk.id]
    # The check changes no hit, and a search without one reports nothing.
    assert list(reply.hits) == await search(retriever, **query)
    plain = await retriever.Search(
        retriever_pb2.SearchRequest(collection=pg, model=MODEL, **query), timeout=T
    )
    assert not plain.unknown_terms


async def test_names_the_first_context_hits_miss_are_looked_up_four_at_most(retriever):
    await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name="zoo", model=MODEL), timeout=T
    )
    animals = ["Aardvark", "Bison", "Cheetah", "Dingo", "Emu"]
    try:
        first = document("zoo/first.md", ["Nothing lives here."])
        await upsert(retriever, "zoo", [first, document("zoo/all.md", [" ".join(animals)])])
        query = dict(
            collection="zoo",
            query_vector=first.chunks[0].vector,
            mode=common_pb2.SEARCH_MODE_DENSE,
            top_k=2,
        )
        # All hits: the second names every animal.
        assert await unknown_names(retriever, animals, **query) == []
        # The first hit alone names none: four lookups find the other chunk, the fifth
        # name is past the lookup limit.
        assert await unknown_names(retriever, animals, context_hits=1, **query) == ["Emu"]
    finally:
        await retriever.DropCollection(retriever_pb2.DropCollectionRequest(name="zoo"), timeout=T)


async def test_a_name_only_filtered_out_chunks_mention_is_unknown(retriever, pg):
    wordy = chunk_of("pg/errors.md", 0)
    query = dict(query_vector=wordy.vector, mode=common_pb2.SEARCH_MODE_DENSE, top_k=1)
    terms = ["pg_restore", "unique_violation"]
    assert await unknown_names(retriever, terms, **query) == []
    # pg/dump.md alone names pg_restore: hidden by the filter, the lookup cannot find it.
    hidden = common_pb2.MetadataFilter(doc_ids=["pg/replication.md", "pg/errors.md"])
    assert await unknown_names(retriever, terms, filter=hidden, **query) == ["pg_restore"]


async def test_names_are_looked_up_in_the_extra_collections_too(retriever, pg):
    await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name="names_more", model=MODEL), timeout=T
    )
    try:
        await upsert(
            retriever, "names_more", [document("ha/etcd.md", ["Patroni keeps its leader in etcd."])]
        )
        query = dict(query_text="max_wal_senders", mode=common_pb2.SEARCH_MODE_KEYWORD, top_k=1)
        assert await unknown_names(retriever, ["Patroni"], **query) == ["Patroni"]
        found = await unknown_names(
            retriever, ["Patroni"], extra_collections=["names_more"], **query
        )
        assert found == []
    finally:
        await retriever.DropCollection(
            retriever_pb2.DropCollectionRequest(name="names_more"), timeout=T
        )


# Documents -----------------------------------------------------------------------


async def test_list_documents(retriever, pg):
    listed = await retriever.ListDocuments(
        retriever_pb2.ListDocumentsRequest(collection=pg), timeout=T
    )
    by_id = {d.doc_id: d for d in listed.documents}
    assert set(CORPUS) <= set(by_id)
    doc = by_id["pg/dump.md"]
    assert (doc.doc_hash, doc.chunk_count, doc.title, doc.source) == (
        "v1",
        2,
        "Title of pg/dump.md",
        "/handbook/pg/dump.md",
    )
    listed = await retriever.ListDocuments(
        retriever_pb2.ListDocumentsRequest(collection=pg, doc_ids=[QUOTED_DOC, "missing.md"]),
        timeout=T,
    )
    assert [(d.doc_id, d.chunk_count) for d in listed.documents] == [(QUOTED_DOC, 1)]


async def test_replacing_a_document_leaves_no_stale_chunks(retriever, pg):
    async def upsert(doc: retriever_pb2.DocumentChunks) -> tuple[int, int]:
        reply = await retriever.Upsert(
            retriever_pb2.UpsertRequest(collection=pg, model=MODEL, documents=[doc]), timeout=T
        )
        return reply.results[0].chunks_written, reply.results[0].chunks_deleted

    async def listed() -> list[tuple[int, str]]:
        reply = await retriever.ListDocuments(
            retriever_pb2.ListDocumentsRequest(collection=pg, doc_ids=["tmp.md"]), timeout=T
        )
        return [(d.chunk_count, d.doc_hash) for d in reply.documents]

    assert await upsert(document("tmp.md", ["alpha zebra", "beta yak", "gamma xerus"])) == (3, 0)
    # Same first chunk, two chunks gone, one new one.
    assert await upsert(document("tmp.md", ["alpha zebra", "delta walrus"], "v2")) == (2, 2)
    assert await listed() == [(2, "v2")]
    assert not await keyword(retriever, "yak xerus")
    hits = await keyword(retriever, "walrus zebra", top_k=10)
    assert sorted(h.chunk.text for h in hits) == ["alpha zebra", "delta walrus"]
    # No chunks at all: the document is gone.
    assert await upsert(retriever_pb2.DocumentChunks(doc_id="tmp.md")) == (0, 2)
    assert await listed() == []


async def test_delete_document(retriever, pg):
    await retriever.Upsert(
        retriever_pb2.UpsertRequest(
            collection=pg, model=MODEL, documents=[document("gone.md", ["okapi one", "okapi two"])]
        ),
        timeout=T,
    )
    assert len(await keyword(retriever, "okapi")) == 2
    for expected in (2, 0):
        reply = await retriever.DeleteDocument(
            retriever_pb2.DeleteDocumentRequest(collection=pg, doc_id="gone.md"), timeout=T
        )
        assert reply.chunks_deleted == expected
    assert not await keyword(retriever, "okapi")


async def test_list_documents_past_the_query_window(retriever):
    """More chunks than one Milvus query returns (16384) are all counted."""
    docs, per_doc = 9, 2000
    await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name="bulk", model=MODEL), timeout=T
    )
    try:
        for d in range(docs):
            await retriever.Upsert(
                retriever_pb2.UpsertRequest(
                    collection="bulk",
                    model=MODEL,
                    documents=[document(f"d{d}", [f"chunk {i}" for i in range(per_doc)])],
                ),
                timeout=120,
            )
        listed = await retriever.ListDocuments(
            retriever_pb2.ListDocumentsRequest(collection="bulk"), timeout=120
        )
        assert [(d.doc_id, d.chunk_count) for d in listed.documents] == [
            (f"d{d}", per_doc) for d in range(docs)
        ]
    finally:
        await retriever.DropCollection(retriever_pb2.DropCollectionRequest(name="bulk"), timeout=T)


# Bad requests --------------------------------------------------------------------


def _upsert(
    doc: retriever_pb2.DocumentChunks, collection: str = "pg"
) -> retriever_pb2.UpsertRequest:
    return retriever_pb2.UpsertRequest(collection=collection, model=MODEL, documents=[doc])


def _with_vector(values: list[float]) -> retriever_pb2.DocumentChunks:
    doc = document("bad.md", ["some text"])
    doc.chunks[0].ClearField("vector")
    doc.chunks[0].vector.extend(values)
    return doc


VECTOR = [0.5] * DIM
BAD_SEARCHES = {
    "bad-name": (dict(collection="1pg", query_vector=VECTOR, query_text="x"), "INVALID_ARGUMENT"),
    "unknown-collection": (
        dict(collection="nope", query_vector=VECTOR, query_text="x"),
        "NOT_FOUND",
    ),
    "short-vector": (dict(query_vector=[1.0, 2.0], query_text="x"), "INVALID_ARGUMENT"),
    "keyword-without-text": (
        dict(query_vector=VECTOR, mode=common_pb2.SEARCH_MODE_KEYWORD),
        "INVALID_ARGUMENT",
    ),
    "hybrid-without-text": (
        dict(query_vector=VECTOR, mode=common_pb2.SEARCH_MODE_HYBRID),
        "INVALID_ARGUMENT",
    ),
    "dense-without-vector": (
        dict(query_text="x", mode=common_pb2.SEARCH_MODE_DENSE),
        "INVALID_ARGUMENT",
    ),
    "default-without-vector": (dict(query_text="x"), "INVALID_ARGUMENT"),
    "zero-vector": (
        dict(query_vector=[0.0] * DIM, mode=common_pb2.SEARCH_MODE_DENSE),
        "INVALID_ARGUMENT",
    ),
    "top-k-over-100": (
        dict(query_text="x", mode=common_pb2.SEARCH_MODE_KEYWORD, top_k=101),
        "INVALID_ARGUMENT",
    ),
    "unknown-mode": (dict(query_vector=VECTOR, query_text="x", mode=9), "INVALID_ARGUMENT"),
    "unknown-boost": (
        dict(query_vector=VECTOR, query_text="x", identifier_boost=7),
        "INVALID_ARGUMENT",
    ),
    "no-model": (
        dict(query_vector=VECTOR, mode=common_pb2.SEARCH_MODE_DENSE, model=None),
        "INVALID_ARGUMENT",
    ),
}


@pytest.mark.parametrize(("fields", "code"), BAD_SEARCHES.values(), ids=BAD_SEARCHES.keys())
async def test_bad_searches_get_clear_statuses(retriever, pg, fields, code):
    fields = {"collection": pg, "model": MODEL, **fields}
    model = fields.pop("model")
    request = retriever_pb2.SearchRequest(**fields)
    if model is not None:
        request.model.CopyFrom(model)
    got, message = await status_of(retriever.Search(request, timeout=T))
    assert got.name == code, message


BAD_UPSERTS = {
    "empty-text": (document("bad.md", ["  "]), "text is empty"),
    "empty-doc-id": (retriever_pb2.DocumentChunks(doc_id=""), "doc_id is empty"),
    "vector-length": (_with_vector([1.0] * (DIM - 1)), "has 7 values"),
    "nan-vector": (_with_vector([float("nan")] * DIM), "NaN"),
    "foreign-chunk": (
        retriever_pb2.DocumentChunks(
            doc_id="bad.md", chunks=[document("other.md", ["text"]).chunks[0]]
        ),
        "is not its document's",
    ),
}


@pytest.mark.parametrize(("doc", "words"), BAD_UPSERTS.values(), ids=BAD_UPSERTS.keys())
async def test_bad_upserts_are_refused_and_write_nothing(retriever, pg, doc, words):
    code, message = await status_of(retriever.Upsert(_upsert(doc), timeout=T))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in message
    listed = await retriever.ListDocuments(
        retriever_pb2.ListDocumentsRequest(collection=pg, doc_ids=["bad.md"]), timeout=T
    )
    assert not listed.documents


async def test_every_rpc_on_an_unknown_collection_is_not_found(retriever):
    calls = [
        retriever.DescribeCollection(
            retriever_pb2.DescribeCollectionRequest(name="nope"), timeout=T
        ),
        retriever.DropCollection(retriever_pb2.DropCollectionRequest(name="nope"), timeout=T),
        retriever.ListDocuments(retriever_pb2.ListDocumentsRequest(collection="nope"), timeout=T),
        retriever.Upsert(_upsert(document("a.md", ["text"]), "nope"), timeout=T),
        retriever.DeleteDocument(
            retriever_pb2.DeleteDocumentRequest(collection="nope", doc_id="a.md"), timeout=T
        ),
        retriever.Search(
            retriever_pb2.SearchRequest(
                collection="nope", model=MODEL, query_text="x", mode=common_pb2.SEARCH_MODE_KEYWORD
            ),
            timeout=T,
        ),
    ]
    for call in calls:
        assert await status_of(call) == (
            grpc.StatusCode.NOT_FOUND,
            "collection 'nope' does not exist",
        )


async def test_bad_collection_names_are_invalid(retriever):
    for name in ("", "1abc", "has-dash", "a" * 256, "spaced name"):
        code, _ = await status_of(
            retriever.CreateCollection(
                retriever_pb2.CreateCollectionRequest(name=name, model=MODEL), timeout=T
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, name
    code, _ = await status_of(
        retriever.CreateCollection(
            retriever_pb2.CreateCollectionRequest(
                name="ok", model=common_pb2.ModelIdentity(id="m")
            ),
            timeout=T,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# Restarts (last: they stop the processes) ----------------------------------------


async def pg_still_answers(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
        hits = await keyword(stub, "23505")
        assert hits[0].chunk.doc_id == "pg/errors.md"
        target = chunk_of("pg/dump.md", 0)
        hits = await search(stub, query_vector=target.vector, query_text="no owner")
        assert hits[0].chunk.id == target.chunk.id
        described = await stub.DescribeCollection(
            retriever_pb2.DescribeCollectionRequest(name="pg"), timeout=T
        )
        assert described.collection.model == MODEL


async def test_milvus_down_is_unavailable_naming_the_uri(retriever, pg, processes):
    processes.stop_milvus()
    try:
        code, message = await status_of(keyword(retriever, "23505"))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert processes.milvus_uri in message
    finally:
        await processes.start_milvus()
    # Milvus Lite reopened the collection released; the retriever loads it again.
    await pg_still_answers(processes.address)


async def test_collections_survive_restarts(pg, processes):
    processes.stop_retriever()
    processes.stop_milvus()
    await processes.start_milvus()
    await processes.start_retriever()
    # Milvus Lite reopens collections released; the retriever loads them at start-up.
    assert await asyncio.to_thread(load_state, processes.milvus_uri, pg) == "Loaded"
    await pg_still_answers(processes.address)


def load_state(uri: str, collection: str) -> str:
    client = MilvusClient(uri=uri, timeout=T)
    try:
        return client.get_load_state(collection, timeout=T)["state"].name
    finally:
        client.close()


# Flushing Milvus Lite --------------------------------------------------------------
# Milvus Lite searches the rows it has not flushed one by one and replays them from its
# log on every restart, so the retriever flushes what it writes; these tests read Milvus
# Lite's own data folder to see which rows were flushed.


def flushed_files(processes: Processes, collection: str) -> list[Path]:
    return sorted((processes.workdir / "milvus" / "collections" / collection).rglob("*.parquet"))


async def wait_for_flush(processes: Processes, collection: str, within_s: float = 15) -> None:
    deadline = time.monotonic() + within_s
    while not flushed_files(processes, collection):
        assert time.monotonic() < deadline, f"{collection!r} not flushed in {within_s} s"
        await asyncio.sleep(0.2)


async def test_the_last_writes_are_flushed_once_writes_go_idle(retriever, processes):
    await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name="idle", model=MODEL), timeout=T
    )
    await retriever.Upsert(
        retriever_pb2.UpsertRequest(
            collection="idle", model=MODEL, documents=[document("a.md", ["a few rows"])]
        ),
        timeout=T,
    )
    # Far below RAGPLANE_MILVUS_FLUSH_ROWS: flushed by the idle flush (2 s), not the count.
    assert not flushed_files(processes, "idle")
    await wait_for_flush(processes, "idle")
    hits = await keyword(retriever, "rows", collection="idle")
    assert [h.chunk.doc_id for h in hits] == ["a.md"]


async def test_what_milvus_lite_replays_at_start_is_flushed_on_connect(processes):
    client = MilvusClient(uri=processes.milvus_uri, timeout=T)
    try:
        client.create_collection("replayed", dimension=4, timeout=T)
        client.insert("replayed", [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}], timeout=T)
    finally:
        client.close()
    assert not flushed_files(processes, "replayed")
    processes.stop_retriever()
    await processes.start_retriever()
    await wait_for_flush(processes, "replayed", within_s=1)
