"""Collections bound to one embedding model, and the documents written into them."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ragplane.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ragplane.retriever import metrics
from ragplane.retriever.schema import DocumentChunks
from ragplane.retriever.store import (
    CollectionRecord,
    DocumentPatch,
    DocumentSummary,
    MilvusStore,
    ModelRecord,
)


@dataclass(frozen=True)
class CollectionSummary:
    """A collection's name, the model it is bound to, how many chunks it holds, and what
    it records of itself."""

    name: str
    model: ModelRecord
    chunk_count: int
    description: str = ""
    create_time_ms: int = 0
    update_time_ms: int = 0
    document_count: int = 0

    @classmethod
    def of(
        cls, name: str, record: CollectionRecord, model: ModelRecord, chunks: int
    ) -> CollectionSummary:
        return cls(
            name,
            model,
            chunks,
            record.description,
            record.create_time_ms,
            record.update_time_ms,
        )


@dataclass(frozen=True)
class DocumentPage:
    """One page of a collection's documents, and the token of the next ("" if last)."""

    documents: list[DocumentSummary]
    next_page_token: str


@dataclass(frozen=True)
class DocumentWrite:
    """What one document's write did."""

    doc_id: str
    chunks_written: int
    chunks_deleted: int


class Catalog:
    """Creates, describes, lists and drops collections; writes and deletes documents;
    refuses vectors of another model than a collection's."""

    def __init__(self, store: MilvusStore) -> None:
        self._store = store

    async def create(
        self, name: str, model: ModelRecord, exist_ok: bool, description: str = ""
    ) -> tuple[CollectionSummary, bool]:
        """Creates a collection bound to `model` (with exist_ok, an existing one bound to
        the same model is no error); returns it and whether it was created."""
        created = await self._store.create_collection(name, model, description)
        if not created:
            stored = await self._store.model_of(name)
            if not exist_ok:
                raise AlreadyExists(f"collection '{name}' already exists ({stored.label()})")
            if not stored.matches(model):
                raise FailedPrecondition(
                    f"collection '{name}' exists with {stored.label()}, not {model.label()}; "
                    "use another collection name or the same embedder"
                )
        return await self.describe(name), created

    async def describe(self, name: str) -> CollectionSummary:
        """A collection's model, chunk and document counts and properties; NOT_FOUND if it
        does not exist."""
        record = await self._store.record(name)
        if record.model is None:
            await self._store.model_of(name)  # raises: ragplane did not create it
        assert record.model is not None
        return await self._counted(name, record, record.model)

    async def _counted(
        self, name: str, record: CollectionRecord, model: ModelRecord, documents: bool = True
    ) -> CollectionSummary:
        """The summary with its chunk count, and its document count where `documents`
        (0 otherwise: counting documents reads every chunk's doc_id)."""
        if not documents:
            return CollectionSummary.of(name, record, model, await self._store.count(name))
        chunks, document_count = await asyncio.gather(
            self._store.count(name), self._store.count_documents(name)
        )
        return replace(
            CollectionSummary.of(name, record, model, chunks), document_count=document_count
        )

    async def collections(
        self, prefix: str = "", documents: bool = True
    ) -> list[CollectionSummary]:
        """Every collection ragplane created in the database whose name starts with
        `prefix`, by name; collections that record no model are not ragplane's, and are
        left out. `documents`: as in _counted."""
        names = sorted(n for n in await self._store.collection_names() if n.startswith(prefix))
        found = await asyncio.gather(*(self._summary(name, documents) for name in names))
        return [summary for summary in found if summary is not None]

    async def _summary(self, name: str, documents: bool) -> CollectionSummary | None:
        try:
            record = await self._store.record(name)
            if record.model is None:
                return None
            return await self._counted(name, record, record.model, documents)
        except NotFound:
            return None  # dropped since it was listed

    async def drop(self, name: str) -> None:
        """Drops a collection and all its chunks."""
        await self._store.drop_collection(name)

    async def documents(
        self, name: str, doc_ids: Sequence[str], page_size: int = 0, page_token: str = ""
    ) -> DocumentPage:
        """The stored documents (all, or the ones named) by doc_id, with content hash and
        chunk count: page_size at a time (0: all), from the page page_token names."""
        await self._store.model_of(name)
        after = _page_start(page_token)
        found = await self._store.documents(name, doc_ids, after)
        if not page_size or len(found) <= page_size:
            return DocumentPage(found, "")
        page = found[:page_size]
        return DocumentPage(page, _page_token(page[-1].doc_id))

    async def update_document(
        self, name: str, doc_id: str, patch: DocumentPatch
    ) -> DocumentSummary:
        """Applies the patch to every chunk of the document, keeping their vectors;
        NOT_FOUND if the collection has no such document."""
        await self._store.model_of(name)
        updated = await self._store.update_document(name, doc_id, patch)
        if updated is None:
            raise NotFound(f"no document {doc_id!r} in collection '{name}'")
        return updated

    async def write(self, name: str, documents: Sequence[DocumentChunks]) -> list[DocumentWrite]:
        """Writes documents' chunks; afterwards each document has exactly the chunks given.
        The vectors must come from the collection's model (see bound_model)."""
        if not await self._store.has_tags(name):
            for doc in documents:
                if any(indexed.chunk.tags for indexed in doc.chunks):
                    raise FailedPrecondition(
                        f"collection '{name}' was created before tags existed; index "
                        f"{doc.doc_id!r} without tags or into a new collection"
                    )
        if not await self._store.has_metadata(name):
            for doc in documents:
                if any(indexed.chunk.metadata for indexed in doc.chunks):
                    raise FailedPrecondition(
                        f"collection '{name}' was created before document metadata existed; "
                        f"index {doc.doc_id!r} without metadata or into a new collection"
                    )
        counts = await self._store.replace_documents(name, documents) if documents else []
        results = []
        for doc, (written, deleted) in zip(documents, counts, strict=True):
            metrics.CHUNKS_WRITTEN.inc(written)
            metrics.CHUNKS_DELETED.inc(deleted)
            results.append(DocumentWrite(doc.doc_id, written, deleted))
        return results

    async def delete_document(self, name: str, doc_id: str) -> int:
        """Removes every chunk of one document; returns how many there were."""
        await self._store.model_of(name)
        deleted = await self._store.delete_document(name, doc_id)
        metrics.CHUNKS_DELETED.inc(deleted)
        return deleted

    async def bound_model(
        self, name: str, given: ModelRecord, verb: str, max_age_s: float = 0.0
    ) -> ModelRecord:
        """The collection's model, refusing vectors that come from another one."""
        stored = await self._store.model_of(name, max_age_s)
        if not stored.matches(given):
            raise FailedPrecondition(
                f"collection '{name}' was indexed with {stored.label()} but these vectors come "
                f"from {given.label()}; {verb} with the same embedder or re-index the collection"
            )
        return stored


def _page_token(last_doc_id: str) -> str:
    return base64.urlsafe_b64encode(last_doc_id.encode()).decode()


def _page_start(token: str) -> str:
    """The doc_id a page token continues after ("" for the first page)."""
    if not token:
        return ""
    try:
        start = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
        if not start:
            raise ValueError("empty")
        return start
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument(
            f"page_token {token!r} is not one this API gave; pass a next_page_token back "
            "as it came, or none for the first page"
        ) from None
