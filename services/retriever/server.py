"""Retriever service: chunks with their metadata in Milvus; dense, keyword and hybrid search."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import grpc

from ragplane.config import env_float, env_str, listen_address
from ragplane.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from ragplane.retriever.store import MAX_TEXT_CHARS, MilvusStore, ModelRecord, escape
from ragplane.server import serve, setup_logging
from ragplane.telemetry import tracer
from ragplane.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc

COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
DEFAULT_TOP_K = 5
MAX_TOP_K = 100


@dataclass(frozen=True)
class RetrieverSettings:
    address: str
    milvus_uri: str
    milvus_token: str
    milvus_timeout_s: float

    @classmethod
    def from_env(cls) -> RetrieverSettings:
        return cls(
            address=listen_address("retriever"),
            milvus_uri=env_str("RAGPLANE_MILVUS_URI", "http://127.0.0.1:19530"),
            milvus_token=env_str("RAGPLANE_MILVUS_TOKEN", ""),
            milvus_timeout_s=env_float("RAGPLANE_MILVUS_TIMEOUT_SECONDS", 30.0, minimum=0.1),
        )


def _record(model: common_pb2.EmbeddingModel) -> ModelRecord:
    return ModelRecord(model.id, model.revision, model.weights_sha256, model.dimension)


def _message(record: ModelRecord) -> common_pb2.EmbeddingModel:
    return common_pb2.EmbeddingModel(
        id=record.id,
        revision=record.revision,
        weights_sha256=record.weights_sha256,
        dimension=record.dimension,
    )


def _check_name(name: str) -> str:
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(
            f"collection {name!r} is not a valid name (letters, digits and _, "
            "not starting with a digit, at most 255)"
        )
    return name


def _same_model(stored: ModelRecord, given: ModelRecord) -> bool:
    return (stored.id, stored.revision, stored.dimension) == (
        given.id,
        given.revision,
        given.dimension,
    )


class RetrieverServicer(retriever_pb2_grpc.RetrieverServiceServicer):
    def __init__(self, store: MilvusStore) -> None:
        self._store = store

    async def _bound_model(self, collection: str, model: common_pb2.EmbeddingModel) -> ModelRecord:
        """The collection's model, refusing vectors that came from another one."""
        stored = await self._store.model_of(_check_name(collection))
        given = _record(model)
        if not _same_model(stored, given):
            raise FailedPrecondition(
                f"collection {collection!r} was indexed with {stored.label()} but these "
                f"vectors come from {given.label()}; use the embedder it was built with "
                "or re-index the collection"
            )
        return stored

    async def CreateCollection(self, request, context):  # noqa: N802 - gRPC method name
        """Creates a collection bound to one embedding model."""
        name = _check_name(request.name)
        if not request.model.id or request.model.dimension == 0:
            raise InvalidArgument("model.id and model.dimension are required")
        given = _record(request.model)
        created = False
        if await self._store.exists(name):
            stored = await self._store.model_of(name)
            if not _same_model(stored, given):
                raise FailedPrecondition(
                    f"collection {name!r} exists with {stored.label()}, not {given.label()}"
                )
            if not request.exist_ok:
                raise AlreadyExists(f"collection {name!r} already exists")
        else:
            await self._store.create(name, given)
            created = True
        return retriever_pb2.CreateCollectionResponse(
            collection=await self._describe(name), created=created
        )

    async def DescribeCollection(self, request, context):  # noqa: N802
        """A collection's model and chunk count."""
        return retriever_pb2.DescribeCollectionResponse(
            collection=await self._describe(_check_name(request.name))
        )

    async def _describe(self, name: str) -> retriever_pb2.Collection:
        model = await self._store.model_of(name)
        return retriever_pb2.Collection(
            name=name, model=_message(model), chunk_count=await self._store.count(name)
        )

    async def DropCollection(self, request, context):  # noqa: N802
        """Drops a collection and its chunks."""
        await self._store.drop(_check_name(request.name))
        return retriever_pb2.DropCollectionResponse()

    async def ListDocuments(self, request, context):  # noqa: N802
        """Stored documents with their content hashes and chunk counts."""
        name = _check_name(request.collection)
        await self._store.model_of(name)
        expr = _doc_filter(request.doc_ids) if request.doc_ids else ""
        rows = await self._store.query(name, expr, ["doc_id", "doc_hash", "title", "source"])
        documents: dict[str, retriever_pb2.StoredDocument] = {}
        for row in rows:
            doc = documents.setdefault(
                row["doc_id"],
                retriever_pb2.StoredDocument(
                    doc_id=row["doc_id"],
                    doc_hash=row["doc_hash"],
                    title=row["title"],
                    source=row["source"],
                ),
            )
            doc.chunk_count += 1
        return retriever_pb2.ListDocumentsResponse(
            documents=sorted(documents.values(), key=lambda d: d.doc_id)
        )

    async def Upsert(self, request, context):  # noqa: N802
        """Writes each document's chunks, then removes its chunks that are no longer there."""
        model = await self._bound_model(request.collection, request.model)
        rows_by_doc = [(doc.doc_id, _rows(doc, model.dimension)) for doc in request.documents]
        results = []
        for doc_id, rows in rows_by_doc:
            # Write first, delete stale after: a reader never sees the document missing.
            old_ids = await self._store.chunk_ids(request.collection, doc_id)
            await self._store.upsert(request.collection, rows)
            stale = old_ids - {r["id"] for r in rows}
            if stale:
                await self._store.delete(request.collection, f"id in {_list(stale)}")
            results.append(
                retriever_pb2.DocumentUpsertResult(
                    doc_id=doc_id, chunks_written=len(rows), chunks_deleted=len(stale)
                )
            )
        return retriever_pb2.UpsertResponse(results=results)

    async def DeleteDocument(self, request, context):  # noqa: N802
        """Removes every chunk of one document."""
        name = _check_name(request.collection)
        await self._store.model_of(name)
        if not request.doc_id:
            raise InvalidArgument("doc_id is empty")
        ids = await self._store.chunk_ids(name, request.doc_id)
        if ids:
            await self._store.delete(name, f"id in {_list(ids)}")
        return retriever_pb2.DeleteDocumentResponse(chunks_deleted=len(ids))

    async def Search(self, request, context):  # noqa: N802
        """Dense, keyword (BM25) or hybrid (RRF) search with metadata filters."""
        started = time.perf_counter()
        model = await self._bound_model(request.collection, request.model)
        mode = request.mode or common_pb2.SEARCH_MODE_HYBRID
        top_k = request.top_k or DEFAULT_TOP_K
        if top_k > MAX_TOP_K:
            raise InvalidArgument(f"top_k is {top_k}; the limit is {MAX_TOP_K}")
        vector = text = None
        if mode in (common_pb2.SEARCH_MODE_DENSE, common_pb2.SEARCH_MODE_HYBRID):
            vector = _vector(request.query_vector, model.dimension, "query_vector")
        if mode in (common_pb2.SEARCH_MODE_KEYWORD, common_pb2.SEARCH_MODE_HYBRID):
            if not request.query_text.strip():
                raise InvalidArgument("query_text is required in keyword and hybrid modes")
            text = request.query_text
        with tracer.start_as_current_span("milvus search") as span:
            span.set_attributes(
                {
                    "ragplane.collection": request.collection,
                    "ragplane.mode": common_pb2.SearchMode.Name(mode),
                    "ragplane.top_k": top_k,
                }
            )
            hits = await self._store.search(
                request.collection,
                vector=vector,
                text=text,
                expr=_filter(request.filter),
                limit=top_k,
            )
        return retriever_pb2.SearchResponse(
            hits=[common_pb2.ScoredChunk(chunk=_chunk(h.fields), score=h.score) for h in hits],
            timing=common_pb2.Timing(compute_ms=(time.perf_counter() - started) * 1000),
        )


def _vector(values, dimension: int, name: str) -> list[float]:
    if len(values) != dimension:
        raise InvalidArgument(f"{name} has {len(values)} values; the collection takes {dimension}")
    return list(values)


def _rows(doc: retriever_pb2.DocumentChunks, dimension: int) -> list[dict]:
    if not doc.doc_id:
        raise InvalidArgument("a document's doc_id is empty")
    rows = []
    for i, indexed in enumerate(doc.chunks):
        c = indexed.chunk
        where = f"document {doc.doc_id!r} chunk {i}"
        if not c.id:
            raise InvalidArgument(f"{where}: id is empty")
        if c.doc_id != doc.doc_id:
            raise InvalidArgument(f"{where}: doc_id {c.doc_id!r} does not match its document")
        if not c.text.strip():
            raise InvalidArgument(f"{where}: text is empty")
        if len(c.text) > MAX_TEXT_CHARS:
            raise InvalidArgument(f"{where}: text is over {MAX_TEXT_CHARS} characters")
        rows.append(
            {
                "id": c.id,
                "doc_id": c.doc_id,
                "doc_hash": c.doc_hash,
                "title": c.title,
                "source": c.source,
                "section": c.section,
                "position": c.position,
                "content_hash": c.content_hash,
                "text": c.text,
                "dense": _vector(indexed.vector, dimension, f"{where}: vector"),
            }
        )
    return rows


def _chunk(fields: dict) -> common_pb2.Chunk:
    return common_pb2.Chunk(**{k: fields[k] for k in common_pb2.Chunk.DESCRIPTOR.fields_by_name})


def _list(values) -> str:
    return "[" + ", ".join(escape(v) for v in sorted(values)) + "]"


def _doc_filter(doc_ids) -> str:
    return f"doc_id in {_list(doc_ids)}"


def _filter(f: common_pb2.MetadataFilter) -> str:
    parts = []
    if f.doc_ids:
        parts.append(_doc_filter(f.doc_ids))
    if f.source_prefix:
        prefix = f.source_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        parts.append(f"source like {escape(prefix + '%')}")
    return " and ".join(parts)


async def run(settings: RetrieverSettings) -> None:
    store = MilvusStore(settings.milvus_uri, settings.milvus_token, settings.milvus_timeout_s)
    await store.start()
    servicer = RetrieverServicer(store)

    def register(server: grpc.aio.Server) -> list[str]:
        retriever_pb2_grpc.add_RetrieverServiceServicer_to_server(servicer, server)
        return [retriever_pb2.DESCRIPTOR.services_by_name["RetrieverService"].full_name]

    await serve("retriever", settings.address, register, on_shutdown=store.close)


def main() -> None:
    setup_logging("retriever")
    asyncio.run(run(RetrieverSettings.from_env()))


if __name__ == "__main__":
    main()
