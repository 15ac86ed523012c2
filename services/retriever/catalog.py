"""Collections bound to one embedding model, and the documents written into them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from ragplane.errors import AlreadyExists, FailedPrecondition, NotFound
from ragplane.retriever import metrics
from ragplane.retriever.schema import DocumentChunks
from ragplane.retriever.store import DocumentSummary, MilvusStore, ModelRecord


@dataclass(frozen=True)
class CollectionSummary:
    """A collection's name, the model it is bound to and how many chunks it holds."""

    name: str
    model: ModelRecord
    chunk_count: int


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
        self, name: str, model: ModelRecord, exist_ok: bool
    ) -> tuple[CollectionSummary, bool]:
        """Creates a collection bound to `model` (with exist_ok, an existing one bound to
        the same model is no error); returns it and whether it was created."""
        created = await self._store.create_collection(name, model)
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
        """A collection's model and chunk count; NOT_FOUND if it does not exist."""
        model = await self._store.model_of(name)
        return CollectionSummary(name, model, await self._store.count(name))

    async def collections(self) -> list[CollectionSummary]:
        """Every collection ragplane created in the database, by name; collections that
        record no model are not ragplane's, and are left out."""
        names = sorted(await self._store.collection_names())
        found = await asyncio.gather(*(self._summary(name) for name in names))
        return [summary for summary in found if summary is not None]

    async def _summary(self, name: str) -> CollectionSummary | None:
        try:
            model = await self._store.recorded_model(name)
            if model is None:
                return None
            return CollectionSummary(name, model, await self._store.count(name))
        except NotFound:
            return None  # dropped since it was listed

    async def drop(self, name: str) -> None:
        """Drops a collection and all its chunks."""
        await self._store.drop_collection(name)

    async def documents(self, name: str, doc_ids: Sequence[str]) -> list[DocumentSummary]:
        """The stored documents (all, or the ones named) with content hash and chunk count."""
        await self._store.model_of(name)
        return await self._store.documents(name, doc_ids)

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
