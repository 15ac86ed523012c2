"""Collections and the documents in them, as the public API manages them: create (bound
to the embedder's model), list, describe, drop; list, get, update and delete documents.

Both doors (grpc_api.py and http/) translate to and from these types; the retriever
does the storing, this class the rules a caller sees (the default collection, NOT_FOUND
for a document that is not there, page sizes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ragplane.errors import InvalidArgument, NotFound
from ragplane.gateway import api
from ragplane.gateway.clients import Backends, Deadline, Timeouts
from ragplane.v1 import common_pb2, embedder_pb2, retriever_pb2

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Model:
    id: str
    revision: str
    dimension: int


@dataclass(frozen=True)
class CollectionInfo:
    """A collection: its embedding model, description, size and times (Unix ms, 0 when
    it predates them)."""

    name: str
    model: Model
    description: str
    chunk_count: int
    document_count: int
    create_time_ms: int
    update_time_ms: int


@dataclass(frozen=True)
class DocumentInfo:
    """A stored document: what indexing recorded, and when (Unix ms; 0: not recorded)."""

    doc_id: str
    title: str
    source: str
    doc_hash: str
    chunk_count: int
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    index_time_ms: int = 0


@dataclass(frozen=True)
class DocumentPage:
    documents: list[DocumentInfo]
    # "" on the last page.
    next_page_token: str


@dataclass(frozen=True)
class DocumentPatch:
    """What to change: each field that is not None replaces the stored one."""

    tags: tuple[str, ...] | None = None
    metadata: dict[str, str] | None = None
    title: str | None = None


class Collections:
    """The collection and document calls, over the embedder (for the model a new
    collection is bound to) and the retriever."""

    def __init__(self, backends: Backends, timeouts: Timeouts, default_collection: str) -> None:
        self._backends = backends
        self._timeouts = timeouts
        self._default = default_collection

    def name(self, given: str) -> str:
        """The collection a request names, else the server's default."""
        return api.valid_collection(given, self._default)

    async def create(
        self, name: str, description: str, exist_ok: bool, budget: float | None
    ) -> tuple[CollectionInfo, bool]:
        """Creates a collection bound to the embedder's model; with exist_ok an existing
        one (same model) is returned. Returns it and whether it was created."""
        if not name:
            raise InvalidArgument("name is empty: name the collection to create")
        name = self.name(name)
        deadline = Deadline(budget)
        info = await self._backends.embedder.Info(
            embedder_pb2.EmbedderServiceInfoRequest(),
            timeout=deadline.timeout(self._timeouts.embed),
        )
        reply = await self._backends.retriever.CreateCollection(
            retriever_pb2.CreateCollectionRequest(
                name=name, model=info.model, exist_ok=exist_ok, description=description
            ),
            timeout=deadline.timeout(self._timeouts.retrieve),
        )
        return collection_info(reply.collection), reply.created

    async def list_collections(self, budget: float | None) -> list[CollectionInfo]:
        """Every collection, by name, with its model, sizes and times."""
        reply = await self._backends.retriever.ListCollections(
            retriever_pb2.ListCollectionsRequest(), timeout=self._timeout(budget)
        )
        return [collection_info(c) for c in reply.collections]

    async def describe(self, name: str, budget: float | None) -> CollectionInfo:
        """One collection; NOT_FOUND if it does not exist."""
        reply = await self._backends.retriever.DescribeCollection(
            retriever_pb2.DescribeCollectionRequest(name=self.name(name)),
            timeout=self._timeout(budget),
        )
        return collection_info(reply.collection)

    async def drop(self, name: str, budget: float | None) -> None:
        """Drops a collection and its documents. The name is required: an empty one
        does not mean the default here."""
        if not name:
            raise InvalidArgument("name is empty: name the collection to drop")
        await self._backends.retriever.DropCollection(
            retriever_pb2.DropCollectionRequest(name=self.name(name)),
            timeout=self._timeout(budget),
        )

    async def documents(
        self, collection: str, page_size: int, page_token: str, budget: float | None
    ) -> DocumentPage:
        """A page of the collection's documents, by doc_id."""
        if page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size is {page_size}; the limit is {MAX_PAGE_SIZE}")
        reply = await self._backends.retriever.ListDocuments(
            retriever_pb2.ListDocumentsRequest(
                collection=self.name(collection),
                page_size=page_size or DEFAULT_PAGE_SIZE,
                page_token=page_token,
            ),
            timeout=self._timeout(budget),
        )
        return DocumentPage([document_info(d) for d in reply.documents], reply.next_page_token)

    async def get(self, collection: str, doc_id: str, budget: float | None) -> DocumentInfo:
        """One document; NOT_FOUND if the collection has no such document."""
        name = self.name(collection)
        reply = await self._backends.retriever.ListDocuments(
            retriever_pb2.ListDocumentsRequest(collection=name, doc_ids=[_doc_id(doc_id)]),
            timeout=self._timeout(budget),
        )
        if not reply.documents:
            raise _no_document(doc_id, name)
        return document_info(reply.documents[0])

    async def update(
        self, collection: str, doc_id: str, patch: DocumentPatch, budget: float | None
    ) -> DocumentInfo:
        """Changes a document's tags, metadata or title without re-embedding it."""
        request = retriever_pb2.UpdateDocumentRequest(
            collection=self.name(collection), doc_id=_doc_id(doc_id)
        )
        if patch.tags is not None:
            request.patch.tags.values.extend(patch.tags)
            request.patch.tags.SetInParent()
        if patch.metadata is not None:
            request.patch.metadata.entries.update(patch.metadata)
            request.patch.metadata.SetInParent()
        if patch.title is not None:
            request.patch.title = patch.title
        reply = await self._backends.retriever.UpdateDocument(
            request, timeout=self._timeout(budget)
        )
        return document_info(reply.document)

    async def delete(self, collection: str, doc_id: str, budget: float | None) -> int:
        """Removes a document's chunks and says how many; NOT_FOUND if there were none."""
        name = self.name(collection)
        reply = await self._backends.retriever.DeleteDocument(
            retriever_pb2.DeleteDocumentRequest(collection=name, doc_id=_doc_id(doc_id)),
            timeout=self._timeout(budget),
        )
        if not reply.chunks_deleted:
            raise _no_document(doc_id, name)
        return reply.chunks_deleted

    def _timeout(self, budget: float | None) -> float:
        return Deadline(budget).timeout(self._timeouts.retrieve)


def _doc_id(doc_id: str) -> str:
    if not doc_id:
        raise InvalidArgument("doc_id is empty")
    return doc_id


def _no_document(doc_id: str, collection: str) -> NotFound:
    return NotFound(f"no document {doc_id!r} in collection '{collection}'")


def _model(model: common_pb2.ModelIdentity) -> Model:
    return Model(model.id, model.revision, model.dimension)


def collection_info(c: retriever_pb2.Collection) -> CollectionInfo:
    return CollectionInfo(
        name=c.name,
        model=_model(c.model),
        description=c.description,
        chunk_count=c.chunk_count,
        document_count=c.document_count,
        create_time_ms=c.create_time.ToMilliseconds() if c.HasField("create_time") else 0,
        update_time_ms=c.update_time.ToMilliseconds() if c.HasField("update_time") else 0,
    )


def document_info(d: retriever_pb2.StoredDocument) -> DocumentInfo:
    return DocumentInfo(
        doc_id=d.doc_id,
        title=d.title,
        source=d.source,
        doc_hash=d.doc_hash,
        chunk_count=d.chunk_count,
        tags=tuple(d.tags),
        metadata=dict(d.metadata),
        index_time_ms=d.index_time.ToMilliseconds() if d.HasField("index_time") else 0,
    )
