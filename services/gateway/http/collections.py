"""What the collection and document routes call: protocol requests become calls of
gateway/collections.py (and, for uploads, the indexing pipeline), its results protocol
responses. No HTTP here beyond the uploaded files' names and types."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from ragplane.errors import InvalidArgument
from ragplane.gateway.clients import Deadline
from ragplane.gateway.collections import (
    CollectionInfo,
    Collections,
    DocumentInfo,
    DocumentPatch,
)
from ragplane.gateway.http import protocol as p
from ragplane.gateway.http.serving import InvalidParam
from ragplane.gateway.indexing import IndexingPipeline
from ragplane.gateway.loaders import guess_media_type
from ragplane.v1 import gateway_pb2

STATUS_NAMES = {
    gateway_pb2.INGEST_STATUS_WRITTEN: "written",
    gateway_pb2.INGEST_STATUS_UNCHANGED: "unchanged",
    gateway_pb2.INGEST_STATUS_FAILED: "failed",
}
# Types a client sends when it does not know the file's: the name says more.
_UNKNOWN_TYPES = ("", "application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class UploadedFile:
    """One file of a multipart upload: its name, its declared type, its bytes."""

    filename: str
    content_type: str
    content: bytes


class CollectionServing:
    """The collection and document routes over gateway/collections.py."""

    def __init__(self, collections: Collections, indexing: IndexingPipeline) -> None:
        self._collections = collections
        self._indexing = indexing

    async def create(
        self, request: p.CollectionCreateRequest, budget: float | None
    ) -> p.CollectionObject:
        created, is_new = await self._collections.create(
            request.name, request.description, request.exist_ok, budget
        )
        return collection_object(created, created=is_new)

    async def list_collections(self, budget: float | None) -> p.CollectionList:
        found = await self._collections.list_collections(budget)
        return p.CollectionList(data=[collection_object(c) for c in found])

    async def describe(self, name: str, budget: float | None) -> p.CollectionObject:
        return collection_object(await self._collections.describe(name, budget))

    async def drop(self, name: str, budget: float | None) -> p.CollectionDeleted:
        await self._collections.drop(name, budget)
        return p.CollectionDeleted(name=name)

    async def documents(
        self, name: str, limit: int, page_token: str, budget: float | None
    ) -> p.DocumentList:
        page = await self._collections.documents(name, limit, page_token, budget)
        return p.DocumentList(
            data=[document_object(d) for d in page.documents],
            next_page_token=page.next_page_token or None,
        )

    async def get(self, name: str, doc_id: str, budget: float | None) -> p.DocumentObject:
        return document_object(await self._collections.get(name, doc_id, budget))

    async def update(
        self, name: str, doc_id: str, request: p.DocumentUpdateRequest, budget: float | None
    ) -> p.DocumentObject:
        patch = DocumentPatch(
            tags=None if request.tags is None else tuple(request.tags),
            metadata=request.metadata,
            title=request.title,
        )
        if patch == DocumentPatch():
            raise InvalidArgument("the update changes nothing: give tags, metadata or title")
        return document_object(await self._collections.update(name, doc_id, patch, budget))

    async def delete(self, name: str, doc_id: str, budget: float | None) -> p.DocumentDeleted:
        deleted = await self._collections.delete(name, doc_id, budget)
        return p.DocumentDeleted(doc_id=doc_id, chunks_deleted=deleted)

    async def upload(
        self,
        name: str,
        files: list[UploadedFile],
        tags: list[str],
        metadata: str | None,
        budget: float | None,
    ) -> p.UploadResponse:
        """Indexes the uploaded files, each under its file name as doc_id; a file of a type
        ragplane cannot read refuses the whole upload (415) before anything is written."""
        if not files:
            raise InvalidParam("no files: send them as multipart form field `files`", "files")
        collection = self._collections.name(name)
        extra = _metadata(metadata)
        documents = [
            gateway_pb2.Document(
                doc_id=f.filename,
                source=f.filename,
                media_type=_media_type(f),
                content=f.content,
                tags=tags,
                metadata=extra,
            )
            for f in files
        ]
        results = await self._indexing.ingest(collection, documents, Deadline(budget))
        return p.UploadResponse(
            collection=collection,
            data=[
                p.UploadResult(
                    doc_id=r.doc_id,
                    status=STATUS_NAMES[r.status],  # type: ignore[arg-type]
                    chunks_written=r.chunks_written,
                    chunks_deleted=r.chunks_deleted,
                    error=r.error or None,
                )
                for r in results
            ],
        )


def _media_type(file: UploadedFile) -> str:
    declared = file.content_type.split(";", 1)[0].strip().lower()
    return guess_media_type(file.filename) if declared in _UNKNOWN_TYPES else file.content_type


def _metadata(raw: str | None) -> dict[str, str]:
    """The `metadata` form field: a JSON object of strings."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidParam(f"metadata is not JSON: {exc}", "metadata") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidParam('metadata must be a JSON object of strings: {"owner": "…"}', "metadata")
    return value


def _time(ms: int) -> str | None:
    if not ms:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def collection_object(c: CollectionInfo, created: bool | None = None) -> p.CollectionObject:
    return p.CollectionObject(
        name=c.name,
        description=c.description,
        embedding_model=p.EmbeddingModel(
            id=c.model.id, revision=c.model.revision, dimension=c.model.dimension
        ),
        chunk_count=c.chunk_count,
        document_count=c.document_count,
        create_time=_time(c.create_time_ms),
        update_time=_time(c.update_time_ms),
        created=created,
    )


def document_object(d: DocumentInfo) -> p.DocumentObject:
    return p.DocumentObject(
        doc_id=d.doc_id,
        title=d.title,
        source=d.source,
        doc_hash=d.doc_hash,
        chunk_count=d.chunk_count,
        tags=list(d.tags),
        metadata=d.metadata,
        index_time=_time(d.index_time_ms),
    )
