"""The indexing pipeline: load, chunk, embed, upsert; unchanged documents are skipped."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc

from ragplane.errors import InvalidArgument, RagplaneError
from ragplane.gateway import metrics
from ragplane.gateway.chunking import ChunkDraft, chunk_document, chunk_id, document_hash
from ragplane.gateway.clients import Backends, Deadline, Timeouts
from ragplane.gateway.loaders import load_document, media_type_of
from ragplane.server import status_of
from ragplane.telemetry import tracer
from ragplane.v1 import common_pb2, embedder_pb2, gateway_pb2, retriever_pb2

log = logging.getLogger(__name__)

MAX_DOCUMENTS_PER_REQUEST = 256
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
# Texts per Embed call: large enough to batch well, small enough to stay under limits.
EMBED_SLICE = 128
# Documents are embedded and written in groups of at least this many chunks, while the
# documents after them are chunked: the embedder is not left waiting on parsing or on
# Milvus. At most WRITES_IN_FLIGHT groups at once bounds the request's memory and its
# share of the embedder's queue.
GROUP_TEXTS = 32
WRITES_IN_FLIGHT = 8
# Bumped when chunking changes in a way that must re-index unchanged documents.
CHUNKER_VERSION = "4"


@dataclass
class _Prepared:
    document: gateway_pb2.Document
    index_hash: str
    drafts: list[ChunkDraft]


class _Writes:
    """The groups being embedded and written, at most `limit` at once; their results go
    into `results`. The first write that fails ends the request: the error is raised
    from the next `start` or from `finish`, and `cancel` stops the rest."""

    def __init__(self, limit: int, results: dict[str, gateway_pb2.DocumentResult]) -> None:
        self._limit = limit
        self._results = results
        self._running: set[asyncio.Task[list[gateway_pb2.DocumentResult]]] = set()

    async def start(
        self, write: Callable[[], Coroutine[Any, Any, list[gateway_pb2.DocumentResult]]]
    ) -> None:
        """Waits for a free slot (raising a finished write's error), then starts `write()`."""
        while len(self._running) >= self._limit:
            await self._collect(asyncio.FIRST_COMPLETED)
        self._running.add(asyncio.create_task(write()))

    async def finish(self) -> None:
        while self._running:
            await self._collect(asyncio.FIRST_EXCEPTION)

    async def cancel(self) -> None:
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()

    async def _collect(self, when: str) -> None:
        done, _ = await asyncio.wait(self._running, return_when=when)
        for task in done:
            self._running.discard(task)
            for result in task.result():
                self._results[result.doc_id] = result


class IndexingPipeline:
    def __init__(self, backends: Backends, timeouts: Timeouts, chunk_tokens: int) -> None:
        self._backends = backends
        self._timeouts = timeouts
        self._chunk_tokens = chunk_tokens

    async def ingest(
        self,
        collection: str,
        documents: list[gateway_pb2.Document],
        until: Deadline | None = None,
    ) -> list[gateway_pb2.DocumentResult]:
        """Indexes documents; one bad document fails alone, a broken dependency fails all,
        and so does a document of a type ragplane cannot read (UnsupportedMediaType),
        before anything is written. `until`: the caller's deadline (none: the limits)."""
        _validate(documents)
        until = until or Deadline(None)
        info = await self._backends.embedder.Info(
            embedder_pb2.EmbedderServiceInfoRequest(),
            timeout=until.timeout(self._timeouts.embed),
        )
        await self._backends.retriever.CreateCollection(
            retriever_pb2.CreateCollectionRequest(name=collection, model=info.model, exist_ok=True),
            timeout=until.timeout(self._timeouts.retrieve),
        )
        budget = min(self._chunk_tokens, info.max_sequence_length)
        stored = await self._stored_hashes(collection, documents, until)
        results: dict[str, gateway_pb2.DocumentResult] = {}
        writes = _Writes(WRITES_IN_FLIGHT, results)
        group: list[_Prepared] = []
        try:
            for doc in documents:
                index_hash = _index_hash(doc, budget, info.model)
                if stored.get(doc.doc_id) == index_hash:
                    results[doc.doc_id] = gateway_pb2.DocumentResult(
                        doc_id=doc.doc_id, status=gateway_pb2.INGEST_STATUS_UNCHANGED
                    )
                    continue
                try:
                    with tracer.start_as_current_span("chunk") as span:
                        span.set_attribute("ragplane.doc_id", doc.doc_id)
                        drafts = await self._chunk(doc, budget, until)
                        span.set_attribute("ragplane.chunks", len(drafts))
                except RagplaneError as exc:
                    results[doc.doc_id] = _failed(doc.doc_id, str(exc))
                    continue
                group.append(_Prepared(doc, index_hash, drafts))
                if sum(len(p.drafts) for p in group) >= GROUP_TEXTS:
                    # Embedded and written while the next documents are chunked.
                    await writes.start(partial(self._write, collection, info.model, group, until))
                    group = []
            if group:
                await writes.start(partial(self._write, collection, info.model, group, until))
            await writes.finish()
        finally:
            await writes.cancel()
        ordered = [results[doc.doc_id] for doc in documents]
        for r in ordered:
            status = gateway_pb2.IngestStatus.Name(r.status).removeprefix("INGEST_STATUS_")
            metrics.DOCUMENTS_INGESTED.labels(status.lower()).inc()
            metrics.CHUNKS_INGESTED.inc(r.chunks_written)
        return ordered

    async def _stored_hashes(
        self, collection: str, documents: list[gateway_pb2.Document], until: Deadline
    ) -> dict[str, str]:
        listed = await self._backends.retriever.ListDocuments(
            retriever_pb2.ListDocumentsRequest(
                collection=collection, doc_ids=[d.doc_id for d in documents]
            ),
            timeout=until.timeout(self._timeouts.retrieve),
        )
        return {d.doc_id: d.doc_hash for d in listed.documents}

    async def _chunk(
        self, doc: gateway_pb2.Document, budget: int, until: Deadline
    ) -> list[ChunkDraft]:
        loaded = load_document(doc.content, doc.media_type, doc.source or doc.doc_id, doc.title)

        async def count_tokens(texts: list[str]) -> list[int]:
            counts: list[int] = []
            for start in range(0, len(texts), EMBED_SLICE):
                reply = await self._backends.embedder.Tokenize(
                    embedder_pb2.TokenizeRequest(texts=texts[start : start + EMBED_SLICE]),
                    timeout=until.timeout(self._timeouts.embed),
                )
                counts.extend(reply.token_counts)
            return counts

        return await chunk_document(
            loaded,
            doc_id=doc.doc_id,
            source=doc.source or doc.doc_id,
            budget=budget,
            count_tokens=count_tokens,
        )

    async def _embed(self, texts: list[str], until: Deadline) -> list[list[float]]:
        async def embed_slice(part: list[str]) -> list[list[float]]:
            reply = await self._backends.embedder.Embed(
                embedder_pb2.EmbedRequest(texts=part),
                timeout=until.timeout(self._timeouts.embed),
            )
            return [list(e.values) for e in reply.embeddings]

        slices = [texts[i : i + EMBED_SLICE] for i in range(0, len(texts), EMBED_SLICE)]
        # Several slices in flight let the embedder's batcher keep its batches full.
        parts = await asyncio.gather(*(embed_slice(s) for s in slices))
        return [v for part in parts for v in part]

    async def _write(
        self,
        collection: str,
        model: common_pb2.ModelIdentity,
        prepared: list[_Prepared],
        until: Deadline,
    ) -> list[gateway_pb2.DocumentResult]:
        texts = [d.embed_text for p in prepared for d in p.drafts]
        with tracer.start_as_current_span("embed chunks") as span:
            span.set_attribute("ragplane.texts", len(texts))
            vectors = iter(await self._embed(texts, until) if texts else [])
        request = retriever_pb2.UpsertRequest(collection=collection, model=model)
        for p in prepared:
            chunks = [
                retriever_pb2.IndexedChunk(
                    chunk=_chunk_message(d, p.index_hash, p.document.tags, p.document.metadata),
                    vector=next(vectors),
                )
                for d in p.drafts
            ]
            request.documents.append(
                retriever_pb2.DocumentChunks(doc_id=p.document.doc_id, chunks=chunks)
            )
        try:
            reply = await self._backends.retriever.Upsert(
                request, timeout=until.timeout(self._timeouts.retrieve)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            if len(prepared) > 1:
                # One document the retriever refuses: the others are written, each
                # document gets its own result (their chunks embedded again: rare).
                results: list[gateway_pb2.DocumentResult] = []
                for single in prepared:
                    results.extend(await self._write(collection, model, [single], until))
                return results
            _, message = status_of(exc)
            return [_failed(p.document.doc_id, message) for p in prepared]
        return [
            gateway_pb2.DocumentResult(
                doc_id=r.doc_id,
                status=gateway_pb2.INGEST_STATUS_WRITTEN,
                chunks_written=r.chunks_written,
                chunks_deleted=r.chunks_deleted,
            )
            for r in reply.results
        ]


def _validate(documents: list[gateway_pb2.Document]) -> None:
    if not documents:
        raise InvalidArgument("documents is empty")
    if len(documents) > MAX_DOCUMENTS_PER_REQUEST:
        raise InvalidArgument(
            f"{len(documents)} documents in one request; send at most {MAX_DOCUMENTS_PER_REQUEST}"
        )
    seen: set[str] = set()
    for i, doc in enumerate(documents):
        validate_document(i, doc, seen)


def validate_document(i: int, doc: gateway_pb2.Document, seen: set[str]) -> None:
    """INVALID_ARGUMENT for a document no request may carry (empty or repeated doc_id,
    over the size limit, a type ragplane cannot read); `seen`: the doc_ids before it."""
    if not doc.doc_id.strip():
        raise InvalidArgument(f"documents[{i}].doc_id is empty")
    if doc.doc_id in seen:
        raise InvalidArgument(f"doc_id {doc.doc_id!r} appears twice in one request")
    seen.add(doc.doc_id)
    if len(doc.content) > MAX_DOCUMENT_BYTES:
        raise InvalidArgument(
            f"document {doc.doc_id!r} is {len(doc.content)} bytes; the limit is "
            f"{MAX_DOCUMENT_BYTES}"
        )
    # Refused by name for the whole request, never indexed as text.
    media_type_of(doc.media_type, doc.source or doc.doc_id)


def _index_hash(doc: gateway_pb2.Document, budget: int, model: common_pb2.ModelIdentity) -> str:
    """Same hash, same chunks: content plus everything else that shapes them."""
    parts = [
        document_hash(doc.content),
        doc.title,
        doc.source,
        doc.media_type,
        str(budget),
        CHUNKER_VERSION,
        model.id,
        model.revision,
        *sorted(set(doc.tags)),
        *(f"{key}={value}" for key, value in sorted(doc.metadata.items())),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _chunk_message(
    draft: ChunkDraft,
    index_hash: str,
    tags: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> common_pb2.Chunk:
    return common_pb2.Chunk(
        id=chunk_id(draft.doc_id, draft.position, draft.content_hash),
        doc_id=draft.doc_id,
        title=draft.title,
        source=draft.source,
        section=draft.section,
        position=draft.position,
        content_hash=draft.content_hash,
        text=draft.text,
        doc_hash=index_hash,
        tags=tags,
        metadata=metadata or {},
    )


def _failed(doc_id: str, error: str) -> gateway_pb2.DocumentResult:
    return gateway_pb2.DocumentResult(
        doc_id=doc_id, status=gateway_pb2.INGEST_STATUS_FAILED, error=error
    )
