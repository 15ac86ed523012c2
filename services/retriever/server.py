"""Retriever service: chunks with their metadata and vectors in Milvus; dense, keyword
(BM25) and hybrid (RRF) search, in collections bound to one embedding model."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from ragplane.config import env_float, env_str, listen_address
from ragplane.errors import AlreadyExists, ConfigError, FailedPrecondition, InvalidArgument
from ragplane.retriever import metrics
from ragplane.retriever.store import (
    MAX_BYTES,
    DocumentSummary,
    Hit,
    MilvusStore,
    ModelRecord,
    filter_expression,
)
from ragplane.server import run_service, serve
from ragplane.telemetry import tracer
from ragplane.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc

COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
DEFAULT_TOP_K = 5
MAX_TOP_K = 100
MAX_QUERY_CHARS = 8192
SEARCH_MODES: dict[int, int] = {
    common_pb2.SEARCH_MODE_UNSPECIFIED: common_pb2.SEARCH_MODE_HYBRID,
    common_pb2.SEARCH_MODE_DENSE: common_pb2.SEARCH_MODE_DENSE,
    common_pb2.SEARCH_MODE_KEYWORD: common_pb2.SEARCH_MODE_KEYWORD,
    common_pb2.SEARCH_MODE_HYBRID: common_pb2.SEARCH_MODE_HYBRID,
}


@dataclass(frozen=True)
class RetrieverSettings:
    address: str
    milvus_uri: str
    milvus_token: str
    milvus_timeout_s: float

    @classmethod
    def from_env(cls) -> RetrieverSettings:
        uri = env_str("RAGPLANE_MILVUS_URI", "http://127.0.0.1:19530")
        if not uri.startswith(("http://", "https://", "tcp://", "grpc://")):
            raise ConfigError(
                f"RAGPLANE_MILVUS_URI={uri!r} must be a server URI such as "
                "http://127.0.0.1:19530 (run Milvus Lite as a server, not a .db path)"
            )
        return cls(
            address=listen_address("retriever"),
            milvus_uri=uri,
            milvus_token=env_str("RAGPLANE_MILVUS_TOKEN", ""),
            milvus_timeout_s=env_float("RAGPLANE_MILVUS_TIMEOUT_SECONDS", 30.0, minimum=0.1),
        )


class RetrieverServicer(retriever_pb2_grpc.RetrieverServiceServicer):
    """The RetrieverService RPCs: validation here, every Milvus call in the store."""

    def __init__(self, store: MilvusStore) -> None:
        self._store = store

    async def CreateCollection(self, request, context):  # noqa: N802 - gRPC method name
        """Creates a collection bound to one embedding model (idempotent with exist_ok)."""
        name = _collection_name(request.name)
        model = _model_record(request.model, "model")
        created = await self._store.create_collection(name, model)
        if not created:
            stored = await self._store.model_of(name)
            if not request.exist_ok:
                raise AlreadyExists(f"collection '{name}' already exists ({stored.label()})")
            if not stored.matches(model):
                raise FailedPrecondition(
                    f"collection '{name}' exists with {stored.label()}, not {model.label()}; "
                    "use another collection name or the same embedder"
                )
        return retriever_pb2.CreateCollectionResponse(
            collection=await self._describe(name), created=created
        )

    async def DescribeCollection(self, request, context):  # noqa: N802
        """A collection's embedding model and chunk count."""
        name = _collection_name(request.name)
        return retriever_pb2.DescribeCollectionResponse(collection=await self._describe(name))

    async def DropCollection(self, request, context):  # noqa: N802
        """Drops a collection and all its chunks."""
        await self._store.drop_collection(_collection_name(request.name))
        return retriever_pb2.DropCollectionResponse()

    async def ListDocuments(self, request, context):  # noqa: N802
        """Stored documents (all, or the ones named) with content hash and chunk count."""
        name = _collection_name(request.collection)
        await self._store.model_of(name)
        doc_ids = list(request.doc_ids)
        for i, doc_id in enumerate(doc_ids):
            _check_text_field(doc_id, "doc_id", f"doc_ids[{i}]")
        documents = await self._store.documents(name, doc_ids)
        return retriever_pb2.ListDocumentsResponse(documents=[_stored(d) for d in documents])

    async def Upsert(self, request, context):  # noqa: N802
        """Writes documents' chunks; afterwards each document has exactly the chunks given."""
        name = _collection_name(request.collection)
        model = await self._bound_model(name, request.model, "index")
        documents = _validated_documents(request.documents, model.dimension)
        results = []
        for doc_id, rows in documents:
            written, deleted = await self._store.replace_document(name, doc_id, rows)
            metrics.CHUNKS_WRITTEN.inc(written)
            metrics.CHUNKS_DELETED.inc(deleted)
            results.append(
                retriever_pb2.DocumentUpsertResult(
                    doc_id=doc_id, chunks_written=written, chunks_deleted=deleted
                )
            )
        return retriever_pb2.UpsertResponse(results=results)

    async def DeleteDocument(self, request, context):  # noqa: N802
        """Removes every chunk of one document and says how many there were."""
        name = _collection_name(request.collection)
        if not request.doc_id:
            raise InvalidArgument("doc_id is empty")
        _check_text_field(request.doc_id, "doc_id", "doc_id")
        await self._store.model_of(name)
        deleted = await self._store.delete_document(name, request.doc_id)
        metrics.CHUNKS_DELETED.inc(deleted)
        return retriever_pb2.DeleteDocumentResponse(chunks_deleted=deleted)

    async def Search(self, request, context):  # noqa: N802
        """Dense, keyword (BM25) or hybrid (RRF) search, optionally filtered by metadata."""
        name = _collection_name(request.collection)
        mode, top_k, text = _search_mode(request.mode), _top_k(request.top_k), None
        if mode != common_pb2.SEARCH_MODE_DENSE:
            text = _query_text(request.query_text, mode)
        uses_vector = mode != common_pb2.SEARCH_MODE_KEYWORD
        if uses_vector and not request.query_vector:
            raise InvalidArgument(f"query_vector is required in {_mode_name(mode)} mode")
        expr = _filter(request.filter)
        if request.query_vector or request.model.id:
            model = await self._bound_model(name, request.model, "query")
        else:
            model = await self._store.model_of(name)
        query = (
            _vector(request.query_vector, model.dimension, "query_vector")
            if request.query_vector
            else None
        )
        hits, seconds = await self._timed_search(
            name, mode, top_k, query if uses_vector else None, text, expr, query
        )
        return retriever_pb2.SearchResponse(
            hits=[_scored(h, query, mode) for h in hits],
            timing=common_pb2.Timing(compute_ms=seconds * 1000),
        )

    async def _timed_search(
        self,
        name: str,
        mode: int,
        top_k: int,
        vector: list[float] | None,
        text: str | None,
        expr: str,
        relevance_to: list[float] | None,
    ) -> tuple[list[Hit], float]:
        started = time.perf_counter()
        with tracer.start_as_current_span("milvus search") as span:
            span.set_attributes(
                {
                    "ragplane.collection": name,
                    "ragplane.mode": _mode_name(mode),
                    "ragplane.top_k": top_k,
                }
            )
            # Dense scores are the cosine already; other modes fetch the chunk vectors.
            hits = await self._store.search(
                name,
                vector=vector,
                text=text,
                filter_expr=expr,
                limit=top_k,
                with_vectors=relevance_to is not None and mode != common_pb2.SEARCH_MODE_DENSE,
            )
            span.set_attribute("ragplane.hits", len(hits))
        seconds = time.perf_counter() - started
        metrics.SEARCH_DURATION.labels(_mode_name(mode)).observe(seconds)
        metrics.SEARCH_HITS.observe(len(hits))
        return hits, seconds

    async def _bound_model(
        self, name: str, given: common_pb2.EmbeddingModel, verb: str
    ) -> ModelRecord:
        """The collection's model, refusing vectors that come from another one."""
        model = _model_record(given, "model")
        stored = await self._store.model_of(name)
        if not stored.matches(model):
            raise FailedPrecondition(
                f"collection '{name}' was indexed with {stored.label()} but these vectors come "
                f"from {model.label()}; {verb} with the same embedder or re-index the collection"
            )
        return stored

    async def _describe(self, name: str) -> retriever_pb2.Collection:
        model = await self._store.model_of(name)
        return retriever_pb2.Collection(
            name=name, model=_model_message(model), chunk_count=await self._store.count(name)
        )


# Validation -----------------------------------------------------------------------


def _collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(
            f"collection name {name!r} is invalid: use letters, digits and _, "
            "not starting with a digit, at most 255 characters"
        )
    return name


def _model_record(model: common_pb2.EmbeddingModel, field: str) -> ModelRecord:
    if not model.id or not model.dimension:
        raise InvalidArgument(f"{field}.id and {field}.dimension are required")
    return ModelRecord(model.id, model.revision, model.weights_sha256, model.dimension)


def _model_message(model: ModelRecord) -> common_pb2.EmbeddingModel:
    return common_pb2.EmbeddingModel(
        id=model.id,
        revision=model.revision,
        weights_sha256=model.weights_sha256,
        dimension=model.dimension,
    )


def _search_mode(mode: int) -> int:
    if mode not in SEARCH_MODES:
        raise InvalidArgument(f"mode {mode} is not a SearchMode")
    return SEARCH_MODES[mode]


def _top_k(top_k: int) -> int:
    if top_k > MAX_TOP_K:
        raise InvalidArgument(f"top_k is {top_k}; it must be 1-{MAX_TOP_K} (0 means 5)")
    return top_k or DEFAULT_TOP_K


def _mode_name(mode: int) -> str:
    return common_pb2.SearchMode.Name(mode).removeprefix("SEARCH_MODE_").lower()


def _query_text(text: str, mode: int) -> str:
    if not text.strip():
        raise InvalidArgument(f"query_text is required in {_mode_name(mode)} mode")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidArgument(
            f"query_text has {len(text)} characters; the limit is {MAX_QUERY_CHARS}"
        )
    return text


def _vector(values: Sequence[float], dimension: int, where: str) -> list[float]:
    if len(values) != dimension:
        raise InvalidArgument(
            f"{where} has {len(values)} values; the collection's model makes {dimension}"
        )
    array = np.asarray(values, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InvalidArgument(f"{where} contains NaN or infinite values")
    if not array.any():
        raise InvalidArgument(f"{where} is all zeros (cosine similarity is undefined)")
    return array.tolist()


def _check_text_field(value: str, field: str, where: str) -> None:
    size = len(value.encode())
    if size > MAX_BYTES[field]:
        raise InvalidArgument(f"{where} is {size} bytes; the limit is {MAX_BYTES[field]}")


def _filter(f: common_pb2.MetadataFilter) -> str:
    for i, doc_id in enumerate(f.doc_ids):
        _check_text_field(doc_id, "doc_id", f"filter.doc_ids[{i}]")
    _check_text_field(f.source_prefix, "source", "filter.source_prefix")
    return filter_expression(list(f.doc_ids), f.source_prefix)


def _validated_documents(
    documents: Sequence[retriever_pb2.DocumentChunks], dimension: int
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every document's rows, all checked before anything is written."""
    seen_docs: set[str] = set()
    seen_chunks: set[str] = set()
    validated = []
    for d, doc in enumerate(documents):
        if not doc.doc_id:
            raise InvalidArgument(f"documents[{d}].doc_id is empty")
        _check_text_field(doc.doc_id, "doc_id", f"documents[{d}].doc_id")
        if doc.doc_id in seen_docs:
            raise InvalidArgument(f"document {doc.doc_id!r} appears twice in one request")
        seen_docs.add(doc.doc_id)
        rows = []
        for c, indexed in enumerate(doc.chunks):
            row = _row(doc.doc_id, indexed, dimension, f"document {doc.doc_id!r} chunks[{c}]")
            if row["id"] in seen_chunks:
                raise InvalidArgument(f"chunk id {row['id']!r} appears twice in one request")
            seen_chunks.add(row["id"])
            rows.append(row)
        validated.append((doc.doc_id, rows))
    return validated


def _row(
    doc_id: str, indexed: retriever_pb2.IndexedChunk, dimension: int, where: str
) -> dict[str, Any]:
    chunk = indexed.chunk
    if not chunk.id:
        raise InvalidArgument(f"{where}: chunk.id is empty")
    if chunk.doc_id and chunk.doc_id != doc_id:
        raise InvalidArgument(f"{where}: chunk.doc_id {chunk.doc_id!r} is not its document's")
    if not chunk.text.strip():
        raise InvalidArgument(f"{where}: chunk.text is empty")
    row: dict[str, Any] = {
        "id": chunk.id,
        "doc_id": doc_id,
        "doc_hash": chunk.doc_hash,
        "title": chunk.title,
        "source": chunk.source,
        "section": chunk.section,
        "content_hash": chunk.content_hash,
        "text": chunk.text,
    }
    for field, value in row.items():
        _check_text_field(value, field, f"{where}: chunk.{field}")
    row["position"] = chunk.position
    row["dense"] = _vector(indexed.vector, dimension, f"{where}: vector")
    return row


# Responses ------------------------------------------------------------------------


def _stored(doc: DocumentSummary) -> retriever_pb2.StoredDocument:
    return retriever_pb2.StoredDocument(
        doc_id=doc.doc_id,
        doc_hash=doc.doc_hash,
        chunk_count=doc.chunk_count,
        title=doc.title,
        source=doc.source,
    )


def _relevance(hit: Hit, query: list[float] | None, mode: int) -> float:
    """Cosine of query and chunk; the embedder's vectors are unit length."""
    if query is None:
        return 0.0
    if mode == common_pb2.SEARCH_MODE_DENSE:
        return hit.score
    return float(
        np.dot(
            np.asarray(query, dtype=np.float32), np.asarray(hit.fields["dense"], dtype=np.float32)
        )
    )


def _scored(hit: Hit, query: list[float] | None, mode: int) -> common_pb2.ScoredChunk:
    f = hit.fields
    chunk = common_pb2.Chunk(
        id=f["id"],
        doc_id=f["doc_id"],
        title=f["title"],
        source=f["source"],
        section=f["section"],
        position=int(f["position"]),
        content_hash=f["content_hash"],
        text=f["text"],
        doc_hash=f["doc_hash"],
    )
    return common_pb2.ScoredChunk(
        chunk=chunk, score=hit.score, relevance=_relevance(hit, query, mode)
    )


# Entry point ----------------------------------------------------------------------


async def run(settings: RetrieverSettings) -> None:
    """Connects to Milvus (loading every collection) and serves until SIGTERM."""
    store = MilvusStore(settings.milvus_uri, settings.milvus_token, settings.milvus_timeout_s)
    await store.start()
    servicer = RetrieverServicer(store)

    def register(server: grpc.aio.Server) -> list[str]:
        retriever_pb2_grpc.add_RetrieverServiceServicer_to_server(servicer, server)
        return [retriever_pb2.DESCRIPTOR.services_by_name["RetrieverService"].full_name]

    await serve("retriever", settings.address, register, on_shutdown=store.close)


def main() -> None:
    run_service("retriever", lambda: run(RetrieverSettings.from_env()))


if __name__ == "__main__":
    main()
