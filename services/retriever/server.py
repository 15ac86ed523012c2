"""Retriever service: chunks with their metadata and vectors in Milvus; dense, keyword
(BM25) and hybrid (RRF) search, in collections bound to one embedding model.

The servicer only translates: a request is checked (validation), handed to the catalog
(collections, documents) or the searcher, and the answer turned into its proto.
"""

from __future__ import annotations

import asyncio

import grpc

from ragplane.retriever import validation
from ragplane.retriever.catalog import Catalog, CollectionSummary
from ragplane.retriever.rerank import load
from ragplane.retriever.search import Searcher, SearchHit, SearchResult
from ragplane.retriever.settings import RetrieverSettings
from ragplane.retriever.store import DocumentSummary, MilvusStore, ModelRecord
from ragplane.server import run_service, serve
from ragplane.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc


class RetrieverServicer(retriever_pb2_grpc.RetrieverServiceServicer):
    """The RetrieverService RPCs: validation, then the catalog or the searcher."""

    def __init__(self, catalog: Catalog, searcher: Searcher) -> None:
        self._catalog = catalog
        self._searcher = searcher

    async def CreateCollection(self, request, context):  # noqa: N802 - gRPC method name
        """Creates a collection bound to one embedding model (idempotent with exist_ok)."""
        name = validation.collection_name(request.name)
        model = validation.model_record(request.model, "model")
        description = validation.description(request.description)
        collection, created = await self._catalog.create(name, model, request.exist_ok, description)
        return retriever_pb2.CreateCollectionResponse(
            collection=_collection(collection), created=created
        )

    async def DescribeCollection(self, request, context):  # noqa: N802
        """A collection's embedding model, description, times, chunk and document counts."""
        collection = await self._catalog.describe(validation.collection_name(request.name))
        return retriever_pb2.DescribeCollectionResponse(collection=_collection(collection))

    async def ListCollections(self, request, context):  # noqa: N802
        """The collections ragplane created (those named with the prefix, if one is
        given), by name, with their models and sizes."""
        collections = await self._catalog.collections(
            request.name_prefix, documents=not request.skip_document_count
        )
        return retriever_pb2.ListCollectionsResponse(
            collections=[_collection(c) for c in collections]
        )

    async def DropCollection(self, request, context):  # noqa: N802
        """Drops a collection and all its chunks."""
        await self._catalog.drop(validation.collection_name(request.name))
        return retriever_pb2.DropCollectionResponse()

    async def ListDocuments(self, request, context):  # noqa: N802
        """Stored documents (all, or the ones named) with content hash and chunk count, by
        doc_id, a page at a time."""
        name = validation.collection_name(request.collection)
        doc_ids = validation.document_ids(request.doc_ids)
        page = await self._catalog.documents(
            name, doc_ids, validation.page_size(request.page_size), request.page_token
        )
        return retriever_pb2.ListDocumentsResponse(
            documents=[_stored(d) for d in page.documents],
            next_page_token=page.next_page_token,
        )

    async def UpdateDocument(self, request, context):  # noqa: N802
        """Changes a document's tags, metadata or title; its chunks keep their vectors."""
        name = validation.collection_name(request.collection)
        doc_id = validation.document_id(request.doc_id)
        patch = validation.document_patch(request.patch)
        updated = await self._catalog.update_document(name, doc_id, patch)
        return retriever_pb2.UpdateDocumentResponse(document=_stored(updated))

    async def Upsert(self, request, context):  # noqa: N802
        """Writes documents' chunks; afterwards each document has exactly the chunks given."""
        name = validation.collection_name(request.collection)
        given = validation.model_record(request.model, "model")
        model = await self._catalog.bound_model(name, given, "index")
        documents = validation.documents(request.documents, model.dimension)
        results = await self._catalog.write(name, documents)
        return retriever_pb2.UpsertResponse(
            results=[
                retriever_pb2.DocumentUpsertResult(
                    doc_id=r.doc_id,
                    chunks_written=r.chunks_written,
                    chunks_deleted=r.chunks_deleted,
                )
                for r in results
            ]
        )

    async def DeleteDocument(self, request, context):  # noqa: N802
        """Removes every chunk of one document and says how many there were."""
        name = validation.collection_name(request.collection)
        doc_id = validation.document_id(request.doc_id)
        deleted = await self._catalog.delete_document(name, doc_id)
        return retriever_pb2.DeleteDocumentResponse(chunks_deleted=deleted)

    async def Search(self, request, context):  # noqa: N802
        """Dense, keyword (BM25) or hybrid (RRF or weighted) search over one or more
        collections, filtered by metadata, with the top candidates optionally reranked;
        with a name check, the names the corpus does not know."""
        query = validation.search_query(request, self._searcher.defaults)
        return _search_response(await self._searcher.search(query))


# Responses ------------------------------------------------------------------------


def _model(model: ModelRecord) -> common_pb2.ModelIdentity:
    return common_pb2.ModelIdentity(
        id=model.id,
        revision=model.revision,
        weights_sha256=model.weights_sha256,
        dimension=model.dimension,
    )


def _collection(collection: CollectionSummary) -> retriever_pb2.Collection:
    message = retriever_pb2.Collection(
        name=collection.name,
        model=_model(collection.model),
        chunk_count=collection.chunk_count,
        description=collection.description,
        document_count=collection.document_count,
    )
    if collection.create_time_ms:
        message.create_time.FromMilliseconds(collection.create_time_ms)
    if collection.update_time_ms:
        message.update_time.FromMilliseconds(collection.update_time_ms)
    return message


def _stored(doc: DocumentSummary) -> retriever_pb2.StoredDocument:
    message = retriever_pb2.StoredDocument(
        doc_id=doc.doc_id,
        doc_hash=doc.doc_hash,
        chunk_count=doc.chunk_count,
        title=doc.title,
        source=doc.source,
        tags=doc.tags,
        metadata=doc.metadata,
    )
    if doc.index_time_ms:
        message.index_time.FromMilliseconds(doc.index_time_ms)
    return message


def _search_response(result: SearchResult) -> retriever_pb2.SearchResponse:
    response = retriever_pb2.SearchResponse(
        hits=[_scored(hit) for hit in result.hits],
        rerank_ms=result.rerank_ms,
        reranker=result.reranker,
        unknown_terms=result.unknown_terms,
    )
    response.timing.compute_ms = result.compute_ms
    return response


def _scored(hit: SearchHit) -> common_pb2.ScoredChunk:
    c = hit.chunk
    chunk = common_pb2.Chunk(
        id=c.id,
        doc_id=c.doc_id,
        title=c.title,
        source=c.source,
        section=c.section,
        position=c.position,
        content_hash=c.content_hash,
        text=c.text,
        doc_hash=c.doc_hash,
        tags=c.tags,
    )
    return common_pb2.ScoredChunk(
        chunk=chunk,
        score=hit.score,
        relevance=hit.relevance,
        collection=hit.collection,
        rerank_score=hit.rerank_score or 0.0,
        reranked=hit.rerank_score is not None,
    )


# Entry point ----------------------------------------------------------------------


async def run(settings: RetrieverSettings) -> None:
    """Connects to Milvus (loading every collection) and serves until SIGTERM."""
    reranker = await asyncio.to_thread(load, settings.reranker)
    store = MilvusStore(
        settings.milvus_uri,
        settings.milvus_token,
        settings.milvus_timeout_s,
        flush_rows=settings.flush_rows,
        flush_idle_s=settings.flush_idle_s,
    )
    await store.start()
    catalog = Catalog(store)
    searcher = Searcher(
        store,
        catalog,
        reranker,
        settings.fusion,
        settings.model_cache_s,
        settings.identifier_boost,
        settings.plain_fusion,
    )
    servicer = RetrieverServicer(catalog, searcher)

    def register(server: grpc.aio.Server) -> list[str]:
        retriever_pb2_grpc.add_RetrieverServiceServicer_to_server(servicer, server)
        return [retriever_pb2.DESCRIPTOR.services_by_name["RetrieverService"].full_name]

    async def shutdown() -> None:
        reranker.close()
        await store.close()

    # Health is NOT_SERVING while Milvus is down: nothing can be searched without it.
    await serve(
        "retriever", settings.address, register, on_shutdown=shutdown, ready=store.reachable
    )


def main() -> None:
    run_service("retriever", lambda: run(RetrieverSettings.from_env()))


if __name__ == "__main__":
    main()
