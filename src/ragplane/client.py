"""A client of the gateway's public API for product backends, over gRPC or HTTP.

    async with GrpcClient("127.0.0.1:50050") as gateway:   # or HttpClient("http://...")
        async for event in gateway.ask("How do I roll back a deploy?"):
            ...                                            # Citations, Delta..., Finished

Both transports give the same typed events and raise one GatewayError, so callers import
neither grpc nor httpx. Nothing here depends on the gateway's own code.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal, Self

import grpc
import httpx

from ragplane.channels import open_channel
from ragplane.config import state_dir
from ragplane.keys import API_KEY_ENV, read_api_key
from ragplane.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

SearchMode = Literal["dense", "keyword", "hybrid"]
FinishReason = Literal["stop", "length"]
# Why the gateway answered "I don't know": "no_hits", "low_relevance" or "unknown_names".
AbstainReason = str

# Each method's `timeout` is its call's deadline, which gRPC sends to the gateway (hence
# not an asyncio.timeout around the call).
ASK_TIMEOUT_S = 180.0
# The chat `model` that means the gateway's default collection (HTTP).
DEFAULT_MODEL = "ragplane"
SEARCH_TIMEOUT_S = 60.0
INGEST_TIMEOUT_S = 300.0
# Each call that hands a job its documents; a job is sent in pieces of at most these.
JOB_CALL_TIMEOUT_S = 120.0
JOB_PIECE_DOCUMENTS = 200
JOB_PIECE_BYTES = 16 * 1024 * 1024
DELETE_TIMEOUT_S = 60.0

MODES: dict[str, common_pb2.SearchMode] = {
    "dense": common_pb2.SEARCH_MODE_DENSE,
    "keyword": common_pb2.SEARCH_MODE_KEYWORD,
    "hybrid": common_pb2.SEARCH_MODE_HYBRID,
}


# ---- what the gateway gives ---------------------------------------------------------


@dataclass(frozen=True)
class Citation:
    """A chunk the model was given, numbered as the answer cites it: [index]."""

    index: int
    doc_id: str
    title: str = ""
    source: str = ""
    section: str = ""
    chunk_id: str = ""
    score: float = 0.0
    collection: str = ""
    text: str = ""
    relevance: float = 0.0


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Timings:
    """Where the gateway spent an answer's time, in milliseconds."""

    embed_ms: float = 0.0
    retrieve_ms: float = 0.0
    rerank_ms: float = 0.0
    prompt_ms: float = 0.0
    time_to_first_token_ms: float = 0.0
    generate_ms: float = 0.0
    total_ms: float = 0.0


# The events of an answer, in order: Citations once, Delta any number of times, Finished.


@dataclass(frozen=True)
class Citations:
    citations: list[Citation]


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: FinishReason
    usage: Usage = field(default_factory=Usage)
    abstained: bool = False
    abstain_reason: AbstainReason | None = None
    timings: Timings = field(default_factory=Timings)
    # The question's names the corpus does not know (abstain_reason "unknown_names").
    unknown_names: tuple[str, ...] = ()

    @property
    def cut(self) -> bool:
        """True when the answer stopped at max_tokens."""
        return self.finish_reason == "length"


AskEvent = Citations | Delta | Finished


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk, in the gateway's final order."""

    chunk_id: str
    doc_id: str
    title: str
    source: str
    section: str
    text: str
    collection: str
    score: float
    # Query-chunk cosine whatever the mode: one scale to judge relevance by.
    relevance: float
    position: int = 0
    tags: tuple[str, ...] = ()
    # The reranker's score when the hits were reranked.
    rerank_score: float | None = None


@dataclass(frozen=True)
class Document:
    """A document to index; re-ingesting the same doc_id replaces it."""

    doc_id: str
    content: bytes | str
    source: str = ""
    title: str = ""
    # "text/markdown", "text/html", "text/plain", "application/pdf", the DOCX or PPTX
    # type; guessed from source when empty. Any other is refused.
    media_type: str = ""
    tags: tuple[str, ...] = ()
    # Shown with the document (owner, url, ...); not searched.
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Collection:
    """A collection: its embedding model, description and sizes."""

    name: str
    embedding_model: str
    dimension: int
    chunk_count: int
    document_count: int
    description: str = ""


@dataclass(frozen=True)
class StoredDocument:
    """A document as a collection holds it."""

    doc_id: str
    title: str
    source: str
    doc_hash: str
    chunk_count: int
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


class IngestStatus(IntEnum):
    """Numbered as ragplane.v1.IngestStatus, so the two compare equal."""

    WRITTEN = gateway_pb2.INGEST_STATUS_WRITTEN
    UNCHANGED = gateway_pb2.INGEST_STATUS_UNCHANGED
    FAILED = gateway_pb2.INGEST_STATUS_FAILED
    # A job's document not indexed yet; one a sync deleted (gone from the source).
    PENDING = gateway_pb2.INGEST_STATUS_PENDING
    DELETED = gateway_pb2.INGEST_STATUS_DELETED


@dataclass(frozen=True)
class IngestResult:
    doc_id: str
    status: IngestStatus
    chunks_written: int = 0
    chunks_deleted: int = 0
    error: str = ""


@dataclass(frozen=True)
class JobCounts:
    """A job's documents by outcome; `deleted`: a sync's deletions, not in `total`."""

    total: int = 0
    pending: int = 0
    written: int = 0
    unchanged: int = 0
    failed: int = 0
    deleted: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0

    @property
    def done(self) -> int:
        return self.written + self.unchanged + self.failed


# A job's status: receiving, queued, running, succeeded, failed or cancelled.
JobStatus = str
JOB_FINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class IngestJob:
    """An ingestion job as any gateway replica reports it; times are RFC 3339 ("": not
    yet). `documents`: a page of outcomes (job() only)."""

    id: str
    collection: str
    status: JobStatus
    counts: JobCounts = field(default_factory=JobCounts)
    error: str = ""
    delete_missing: bool = False
    doc_id_prefix: str = ""
    cancel_requested: bool = False
    attempts: int = 0
    create_time: str = ""
    start_time: str = ""
    finish_time: str = ""
    documents: tuple[IngestResult, ...] = ()
    next_page_token: str = ""

    @property
    def final(self) -> bool:
        return self.status in JOB_FINAL


class GatewayError(Exception):
    """A call the gateway refused or could not be reached for. `code` is a gRPC status
    name on both transports (NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE, ...); over HTTP
    `http_status` is the response's status. `unreachable` means no gateway answered at
    all (connection refused, unknown host), not that one of its dependencies is down."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        unreachable: bool = False,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
        self.unreachable = unreachable


# ---- the two transports -------------------------------------------------------------


class GatewayClient(ABC):
    """What both transports offer; use it as an async context manager or close() it."""

    # Where the gateway is: host:port (gRPC) or a base URL (HTTP).
    address: str

    @abstractmethod
    def ask(
        self,
        question: str,
        *,
        collection: str = "",
        top_k: int = 0,
        mode: SearchMode | None = None,
        tags: Iterable[str] = (),
        max_tokens: int = 0,
        timeout: float = ASK_TIMEOUT_S,  # noqa: ASYNC109
    ) -> AsyncIterator[AskEvent]:
        """The answer as it streams: Citations, then Delta events, then Finished. Zero
        and None leave a setting to the server."""

    async def ask_text(
        self,
        question: str,
        *,
        collection: str = "",
        top_k: int = 0,
        mode: SearchMode | None = None,
        tags: Iterable[str] = (),
        max_tokens: int = 0,
        timeout: float = ASK_TIMEOUT_S,  # noqa: ASYNC109
    ) -> tuple[str, list[Citation], Finished]:
        """The whole answer: (text, citations, finished)."""
        parts: list[str] = []
        citations: list[Citation] = []
        finished: Finished | None = None
        async for event in self.ask(
            question,
            collection=collection,
            top_k=top_k,
            mode=mode,
            tags=tags,
            max_tokens=max_tokens,
            timeout=timeout,
        ):
            if isinstance(event, Citations):
                citations = event.citations
            elif isinstance(event, Delta):
                parts.append(event.text)
            else:
                finished = event
        if finished is None:
            raise GatewayError("INTERNAL", "the answer stream ended without a finished event")
        return "".join(parts), citations, finished

    @abstractmethod
    async def search(
        self,
        query: str,
        *,
        collection: str = "",
        top_k: int = 0,
        mode: SearchMode | None = None,
        tags: Iterable[str] = (),
        timeout: float = SEARCH_TIMEOUT_S,  # noqa: ASYNC109
    ) -> list[Hit]:
        """Retrieval only: the ranked chunks an ask would draw on."""

    @abstractmethod
    async def ingest(
        self,
        documents: Iterable[Document],
        *,
        collection: str = "",
        timeout: float = INGEST_TIMEOUT_S,  # noqa: ASYNC109
    ) -> list[IngestResult]:
        """Indexes documents; unchanged ones are skipped. One result per document."""

    @abstractmethod
    async def delete(
        self,
        doc_id: str,
        collection: str = "",
        *,
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> int:
        """Removes a document's chunks; returns how many there were (0 or NOT_FOUND, as
        the gateway says: no such document)."""

    @abstractmethod
    async def collections(self, *, timeout: float = DELETE_TIMEOUT_S) -> list[Collection]:  # noqa: ASYNC109
        """Every collection, by name."""

    @abstractmethod
    async def create_collection(
        self,
        name: str,
        description: str = "",
        *,
        exist_ok: bool = False,
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> Collection:
        """Creates a collection bound to the embedder's model."""

    @abstractmethod
    async def describe_collection(
        self,
        name: str = "",
        *,
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> Collection:
        """One collection (the gateway's default when name is empty)."""

    @abstractmethod
    async def drop_collection(self, name: str, *, timeout: float = DELETE_TIMEOUT_S) -> None:  # noqa: ASYNC109
        """Drops a collection and every document in it."""

    @abstractmethod
    async def documents(
        self,
        collection: str = "",
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> tuple[list[StoredDocument], str]:
        """A page of a collection's documents by doc_id, and the next page's token ("" on
        the last)."""

    async def create_job(
        self,
        documents: Iterable[Document],
        *,
        collection: str = "",
        delete_missing: bool = False,
        doc_id_prefix: str = "",
        timeout: float = JOB_CALL_TIMEOUT_S,  # noqa: ASYNC109
    ) -> IngestJob:
        """Hands documents, any number, to the gateway as an ingestion job and returns it
        queued: sent in pieces of at most JOB_PIECE_DOCUMENTS documents or
        JOB_PIECE_BYTES bytes. With delete_missing, a sync: the collection's documents
        under doc_id_prefix that are not among these are deleted."""
        pieces = list(_pieces(list(documents)))
        job = await self._open_job(
            pieces[0] if pieces else [],
            collection=collection,
            delete_missing=delete_missing,
            doc_id_prefix=doc_id_prefix,
            more_documents=len(pieces) > 1,
            timeout=timeout,
        )
        for i, piece in enumerate(pieces[1:], start=2):
            job = await self._add_to_job(job.id, piece, last=i == len(pieces), timeout=timeout)
        return job

    async def sync(
        self,
        documents: Iterable[Document],
        *,
        collection: str = "",
        doc_id_prefix: str = "",
        delete_missing: bool = True,
        timeout: float = JOB_CALL_TIMEOUT_S,  # noqa: ASYNC109
    ) -> IngestJob:
        """A job that makes the collection match a source (a folder, a list): changed
        documents re-indexed, unchanged ones skipped and, with delete_missing, those no
        longer in the source deleted (reported as DELETED in the job's results)."""
        return await self.create_job(
            documents,
            collection=collection,
            delete_missing=delete_missing,
            doc_id_prefix=doc_id_prefix,
            timeout=timeout,
        )

    async def wait_job(
        self,
        job_id: str,
        *,
        poll_s: float = 0.5,
        on_progress: Callable[[IngestJob], None] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> IngestJob:
        """Polls a job until it has finished (succeeded, failed or cancelled), calling
        on_progress with each report; `timeout` seconds in all (None: no limit)."""
        loop = asyncio.get_running_loop()
        until = None if timeout is None else loop.time() + timeout
        while True:
            job = await self.job(job_id, page_size=1)
            if on_progress is not None:
                on_progress(job)
            if job.final:
                return job
            if until is not None and loop.time() > until:
                raise GatewayError("DEADLINE_EXCEEDED", f"job {job_id} is still {job.status}")
            await asyncio.sleep(poll_s)

    async def job_results(self, job_id: str) -> list[IngestResult]:
        """Every document outcome of a job, by position (a sync's deletions last)."""
        results: list[IngestResult] = []
        token = ""
        while True:
            job = await self.job(job_id, page_size=1000, page_token=token)
            results.extend(job.documents)
            token = job.next_page_token
            if not token:
                return results

    @abstractmethod
    async def _open_job(
        self,
        documents: list[Document],
        *,
        collection: str,
        delete_missing: bool,
        doc_id_prefix: str,
        more_documents: bool,
        timeout: float,  # noqa: ASYNC109
    ) -> IngestJob:
        """CreateIngestJob with one piece of documents."""

    @abstractmethod
    async def _add_to_job(
        self,
        job_id: str,
        documents: list[Document],
        *,
        last: bool,
        timeout: float,  # noqa: ASYNC109
    ) -> IngestJob:
        """AddIngestJobDocuments."""

    @abstractmethod
    async def job(
        self,
        job_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> IngestJob:
        """A job with its counts and a page of its documents' outcomes; NOT_FOUND if the
        gateway knows no such job (of the caller's)."""

    @abstractmethod
    async def jobs(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        status: str = "",
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> tuple[list[IngestJob], str]:
        """The caller's jobs, newest first, and the next page's token ("" on the last)."""

    @abstractmethod
    async def cancel_job(self, job_id: str, *, timeout: float = DELETE_TIMEOUT_S) -> IngestJob:  # noqa: ASYNC109
        """Cancels a job: at once if it waits, else after its current sub-batch."""

    @abstractmethod
    async def close(self) -> None:
        """Closes what the client opened."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class GrpcClient(GatewayClient):
    """ragplane.v1.GatewayService over gRPC. `target` is host:port (any gRPC target), or
    a channel the caller owns and closes. With `tls` (implied by `ca`) the channel is TLS,
    trusting the CA certificate file `ca` (default: the system's); `client_cert` is a
    (certificate, key) pair of files for a gateway that asks for one."""

    def __init__(
        self,
        target: str | grpc.aio.Channel,
        *,
        tls: bool = False,
        ca: str | Path | None = None,
        client_cert: tuple[str | Path, str | Path] | None = None,
        api_key: str | None = None,
    ) -> None:
        # The key every call sends (api_key_for: RAGPLANE_API_KEY or the local stack's);
        # a caller's channel sends only a key given here.
        key = api_key if not isinstance(target, str) else api_key_for(api_key)
        self._metadata = (("authorization", f"Bearer {key}"),) if key else None
        if isinstance(target, str):
            self.address = target
            credentials = None
            if tls or ca is not None or client_cert is not None:
                cert_file, key_file = client_cert or (None, None)
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=_read_file(ca),
                    private_key=_read_file(key_file),
                    certificate_chain=_read_file(cert_file),
                )
            self._channel = open_channel(target, credentials=credentials)
            self._owns_channel = True
        else:
            self.address = "(a caller's channel)"
            self._channel = target
            self._owns_channel = False
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)

    async def ask(
        self,
        question: str,
        *,
        collection: str = "",
        top_k: int = 0,
        mode: SearchMode | None = None,
        tags: Iterable[str] = (),
        max_tokens: int = 0,
        timeout: float = ASK_TIMEOUT_S,  # noqa: ASYNC109
    ) -> AsyncIterator[AskEvent]:
        request = gateway_pb2.AskRequest(
            collection=collection,
            question=question,
            top_k=top_k,
            mode=_mode(mode),
            filter=common_pb2.MetadataFilter(tags=list(tags)),
            max_tokens=max_tokens,
        )
        call = self._stub.Ask(request, timeout=timeout, metadata=self._metadata)
        try:
            async for message in call:
                yield event_from_proto(message)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        finally:
            call.cancel()  # a caller that stopped early ends the stream; no-op when done

    async def search(
        self,
        query: str,
        *,
        collection: str = "",
        top_k: int = 0,
        mode: SearchMode | None = None,
        tags: Iterable[str] = (),
        timeout: float = SEARCH_TIMEOUT_S,  # noqa: ASYNC109
    ) -> list[Hit]:
        request = gateway_pb2.GatewayServiceSearchRequest(
            collection=collection,
            query=query,
            top_k=top_k,
            mode=_mode(mode),
            filter=common_pb2.MetadataFilter(tags=list(tags)),
        )
        try:
            reply = await self._stub.Search(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        return [hit_from_proto(h) for h in reply.hits]

    async def ingest(
        self,
        documents: Iterable[Document],
        *,
        collection: str = "",
        timeout: float = INGEST_TIMEOUT_S,  # noqa: ASYNC109
    ) -> list[IngestResult]:
        request = gateway_pb2.IngestRequest(
            collection=collection, documents=[_document_proto(d) for d in documents]
        )
        try:
            reply = await self._stub.Ingest(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        return [
            IngestResult(
                doc_id=r.doc_id,
                status=IngestStatus(r.status),
                chunks_written=r.chunks_written,
                chunks_deleted=r.chunks_deleted,
                error=r.error,
            )
            for r in reply.results
        ]

    async def delete(
        self,
        doc_id: str,
        collection: str = "",
        *,
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> int:
        request = gateway_pb2.GatewayServiceDeleteDocumentRequest(
            collection=collection, doc_id=doc_id
        )
        try:
            reply = await self._stub.DeleteDocument(
                request, timeout=timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        return reply.chunks_deleted

    async def collections(self, *, timeout: float = DELETE_TIMEOUT_S) -> list[Collection]:  # noqa: ASYNC109
        reply = await self._call(
            self._stub.ListCollections, gateway_pb2.GatewayServiceListCollectionsRequest(), timeout
        )
        return [collection_from_proto(c) for c in reply.collections]

    async def create_collection(
        self,
        name: str,
        description: str = "",
        *,
        exist_ok: bool = False,
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> Collection:
        request = gateway_pb2.GatewayServiceCreateCollectionRequest(
            name=name, description=description, exist_ok=exist_ok
        )
        reply = await self._call(self._stub.CreateCollection, request, timeout)
        return collection_from_proto(reply.collection)

    async def describe_collection(
        self,
        name: str = "",
        *,
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> Collection:
        request = gateway_pb2.GatewayServiceDescribeCollectionRequest(name=name)
        reply = await self._call(self._stub.DescribeCollection, request, timeout)
        return collection_from_proto(reply.collection)

    async def drop_collection(self, name: str, *, timeout: float = DELETE_TIMEOUT_S) -> None:  # noqa: ASYNC109
        request = gateway_pb2.GatewayServiceDropCollectionRequest(name=name)
        await self._call(self._stub.DropCollection, request, timeout)

    async def documents(
        self,
        collection: str = "",
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> tuple[list[StoredDocument], str]:
        request = gateway_pb2.GatewayServiceListDocumentsRequest(
            collection=collection, page_size=page_size, page_token=page_token
        )
        reply = await self._call(self._stub.ListDocuments, request, timeout)
        return [document_from_proto(d) for d in reply.documents], reply.next_page_token

    async def _open_job(
        self,
        documents: list[Document],
        *,
        collection: str,
        delete_missing: bool,
        doc_id_prefix: str,
        more_documents: bool,
        timeout: float,  # noqa: ASYNC109
    ) -> IngestJob:
        request = gateway_pb2.GatewayServiceCreateIngestJobRequest(
            collection=collection,
            documents=[_document_proto(d) for d in documents],
            delete_missing=delete_missing,
            doc_id_prefix=doc_id_prefix,
            more_documents=more_documents,
        )
        reply = await self._call(self._stub.CreateIngestJob, request, timeout)
        return job_from_proto(reply.job)

    async def _add_to_job(
        self,
        job_id: str,
        documents: list[Document],
        *,
        last: bool,
        timeout: float,  # noqa: ASYNC109
    ) -> IngestJob:
        request = gateway_pb2.GatewayServiceAddIngestJobDocumentsRequest(
            job_id=job_id, documents=[_document_proto(d) for d in documents], last=last
        )
        reply = await self._call(self._stub.AddIngestJobDocuments, request, timeout)
        return job_from_proto(reply.job)

    async def job(
        self,
        job_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> IngestJob:
        request = gateway_pb2.GatewayServiceGetIngestJobRequest(
            job_id=job_id, page_size=page_size, page_token=page_token
        )
        reply = await self._call(self._stub.GetIngestJob, request, timeout)
        return job_from_proto(reply.job, reply.documents, reply.next_page_token)

    async def jobs(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        status: str = "",
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> tuple[list[IngestJob], str]:
        request = gateway_pb2.GatewayServiceListIngestJobsRequest(
            page_size=page_size, page_token=page_token, status=_job_status(status)
        )
        reply = await self._call(self._stub.ListIngestJobs, request, timeout)
        return [job_from_proto(j) for j in reply.jobs], reply.next_page_token

    async def cancel_job(self, job_id: str, *, timeout: float = DELETE_TIMEOUT_S) -> IngestJob:  # noqa: ASYNC109
        request = gateway_pb2.GatewayServiceCancelIngestJobRequest(job_id=job_id)
        reply = await self._call(self._stub.CancelIngestJob, request, timeout)
        return job_from_proto(reply.job)

    async def _call(self, method: Any, request: Any, timeout: float) -> Any:  # noqa: ASYNC109
        try:
            return await method(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    def _error(self, exc: grpc.aio.AioRpcError) -> GatewayError:
        # A gateway that answers UNAVAILABLE (a dependency is down) leaves the channel
        # READY; one that never answered leaves it connecting or failed.
        connected = self._channel.get_state() == grpc.ChannelConnectivity.READY
        return error_from_rpc(exc, connected=connected)


class HttpClient(GatewayClient):
    """The gateway's OpenAI-compatible HTTP API: `POST /v1/chat/completions` streamed as
    server-sent events (the collection is the chat's `model`, the retrieval settings go in
    its `ragplane` object), `POST /v1/search`, and the collection and document routes.
    Its ingest is the gRPC client's (uploads name documents by file name only)."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        ca: str | Path | None = None,
        client_cert: tuple[str | Path, str | Path] | None = None,
        api_key: str | None = None,
    ) -> None:
        """An https `base_url` is verified against the CA certificate file `ca` (default:
        the system's); `client_cert` is a (certificate, key) pair of files."""
        self.address = base_url.rstrip("/")
        verify: ssl.SSLContext | bool = True
        if ca is not None or client_cert is not None:
            verify = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
            if client_cert is not None:
                verify.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
        key = api_key_for(api_key)
        headers = {"authorization": f"Bearer {key}"} if key else None
        self._http = httpx.AsyncClient(
            base_url=self.address, transport=transport, verify=verify, headers=headers
        )

    async def ask(
        self,
        question: str,
        *,
        collection: str = "",
        top_k: int = 0,
        mode: SearchMode | None = None,
        tags: Iterable[str] = (),
        max_tokens: int = 0,
        timeout: float = ASK_TIMEOUT_S,  # noqa: ASYNC109
    ) -> AsyncIterator[AskEvent]:
        body: dict[str, Any] = {
            "model": collection or DEFAULT_MODEL,
            "messages": [{"role": "user", "content": question}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if max_tokens:
            body["max_completion_tokens"] = max_tokens
        if options := _retrieval_options(top_k, mode, tags):
            body["ragplane"] = options
        decoder = ChatStreamDecoder()
        try:
            async with self._http.stream(
                "POST", "/v1/chat/completions", json=body, timeout=timeout
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_from_http(response.status_code, response.text)
                sse = SseDecoder()
                async for line in response.aiter_lines():
                    data = sse.feed(line)
                    if data is None:
                        continue
                    if data == "[DONE]":
                        break
                    for event in decoder.feed(_json_object(data)):
                        yield event
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        yield decoder.finish()

    async def search(
        self,
        query: str,
        *,
        collection: str = "",
        top_k: int = 0,
        mode: SearchMode | None = None,
        tags: Iterable[str] = (),
        timeout: float = SEARCH_TIMEOUT_S,  # noqa: ASYNC109
    ) -> list[Hit]:
        body = {"query": query, **_retrieval_options(top_k, mode, tags)}
        if collection:
            body["collection"] = collection
        reply = await self._post_json("/v1/search", body, timeout)
        return [hit_from_json(h) for h in reply.get("hits") or []]

    async def ingest(
        self,
        documents: Iterable[Document],
        *,
        collection: str = "",
        timeout: float = INGEST_TIMEOUT_S,  # noqa: ASYNC109
    ) -> list[IngestResult]:
        raise GatewayError(
            "UNIMPLEMENTED", "the HTTP API cannot ingest; use the gRPC API (GrpcClient)"
        )

    async def delete(
        self,
        doc_id: str,
        collection: str = "",
        *,
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> int:
        name = collection or await self._default_collection(timeout)
        reply = await self._request("DELETE", f"/v1/collections/{name}/documents/{doc_id}", timeout)
        return int(reply["chunks_deleted"])

    async def collections(self, *, timeout: float = DELETE_TIMEOUT_S) -> list[Collection]:  # noqa: ASYNC109
        reply = await self._request("GET", "/v1/collections", timeout)
        return [collection_from_json(c) for c in reply["data"]]

    async def create_collection(
        self,
        name: str,
        description: str = "",
        *,
        exist_ok: bool = False,
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> Collection:
        body = {"name": name, "description": description, "exist_ok": exist_ok}
        return collection_from_json(await self._post_json("/v1/collections", body, timeout))

    async def describe_collection(
        self,
        name: str = "",
        *,
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> Collection:
        name = name or await self._default_collection(timeout)
        return collection_from_json(await self._request("GET", f"/v1/collections/{name}", timeout))

    async def drop_collection(self, name: str, *, timeout: float = DELETE_TIMEOUT_S) -> None:  # noqa: ASYNC109
        await self._request("DELETE", f"/v1/collections/{name}", timeout)

    async def documents(
        self,
        collection: str = "",
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> tuple[list[StoredDocument], str]:
        name = collection or await self._default_collection(timeout)
        params: dict[str, Any] = {"page_token": page_token}
        if page_size:
            params["limit"] = page_size
        reply = await self._request("GET", f"/v1/collections/{name}/documents", timeout, params)
        return [document_from_json(d) for d in reply["data"]], reply["next_page_token"] or ""

    async def _open_job(
        self,
        documents: list[Document],
        *,
        collection: str,
        delete_missing: bool,
        doc_id_prefix: str,
        more_documents: bool,
        timeout: float,  # noqa: ASYNC109
    ) -> IngestJob:
        name = collection or await self._default_collection(timeout)
        body = {
            "documents": [_document_json(d) for d in documents],
            "delete_missing": delete_missing,
            "doc_id_prefix": doc_id_prefix,
            "more_documents": more_documents,
        }
        return job_from_json(await self._post_json(f"/v1/collections/{name}/jobs", body, timeout))

    async def _add_to_job(
        self,
        job_id: str,
        documents: list[Document],
        *,
        last: bool,
        timeout: float,  # noqa: ASYNC109
    ) -> IngestJob:
        body = {"documents": [_document_json(d) for d in documents], "last": last}
        return job_from_json(await self._post_json(f"/v1/jobs/{job_id}/documents", body, timeout))

    async def job(
        self,
        job_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> IngestJob:
        params: dict[str, Any] = {"page_token": page_token}
        if page_size:
            params["limit"] = page_size
        return job_from_json(await self._request("GET", f"/v1/jobs/{job_id}", timeout, params))

    async def jobs(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        status: str = "",
        timeout: float = DELETE_TIMEOUT_S,  # noqa: ASYNC109
    ) -> tuple[list[IngestJob], str]:
        params: dict[str, Any] = {"page_token": page_token, "status": status}
        if page_size:
            params["limit"] = page_size
        reply = await self._request("GET", "/v1/jobs", timeout, params)
        return [job_from_json(j) for j in reply["data"]], reply.get("next_page_token") or ""

    async def cancel_job(self, job_id: str, *, timeout: float = DELETE_TIMEOUT_S) -> IngestJob:  # noqa: ASYNC109
        return job_from_json(await self._post_json(f"/v1/jobs/{job_id}/cancel", {}, timeout))

    async def _default_collection(self, timeout: float) -> str:  # noqa: ASYNC109
        """The gateway's default collection, as GET /v1/models marks it."""
        models = await self._request("GET", "/v1/models", timeout)
        for model in models["data"]:
            if model.get("default"):
                return str(model["id"])
        raise GatewayError("NOT_FOUND", "the gateway's default collection does not exist yet")

    async def _request(
        self,
        method: str,
        path: str,
        limit_s: float,
        params: dict[str, Any] | None = None,
    ) -> dict:
        try:
            reply = await self._http.request(method, path, params=params, timeout=limit_s)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if reply.is_error:
            raise error_from_http(reply.status_code, reply.text)
        return _json_object(reply.text)

    async def close(self) -> None:
        await self._http.aclose()

    async def _post_json(self, path: str, body: dict[str, Any], limit_s: float) -> dict:
        try:
            reply = await self._http.post(path, json=body, timeout=limit_s)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if reply.is_error:
            raise error_from_http(reply.status_code, reply.text)
        return _json_object(reply.text)

    def _transport_error(self, exc: httpx.HTTPError) -> GatewayError:
        if isinstance(exc, httpx.TimeoutException):
            return GatewayError("DEADLINE_EXCEEDED", f"no answer from {self.address} in time")
        if isinstance(exc, httpx.ConnectError):
            return GatewayError(
                "UNAVAILABLE", f"cannot connect to {self.address}: {exc}", unreachable=True
            )
        return GatewayError("UNAVAILABLE", f"{self.address}: {exc}")


def _mode(mode: SearchMode | None) -> common_pb2.SearchMode:
    if mode is None:
        return common_pb2.SEARCH_MODE_UNSPECIFIED
    try:
        return MODES[mode]
    except KeyError:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}") from None


def _retrieval_options(top_k: int, mode: SearchMode | None, tags: Iterable[str]) -> dict[str, Any]:
    """The HTTP API's retrieval options: only those set, so that the server's defaults
    apply to the rest."""
    body: dict[str, Any] = {}
    if top_k:
        body["top_k"] = top_k
    if mode is not None:
        _mode(mode)
        body["mode"] = mode
    if tags := list(tags):
        body["filter"] = {"tags": tags}
    return body


def _document_proto(d: Document) -> gateway_pb2.Document:
    content = d.content.encode() if isinstance(d.content, str) else d.content
    return gateway_pb2.Document(
        doc_id=d.doc_id,
        source=d.source,
        title=d.title,
        media_type=d.media_type,
        content=content,
        tags=list(d.tags),
        metadata=d.metadata,
    )


# ---- decoding: gRPC -----------------------------------------------------------------


def event_from_proto(message: gateway_pb2.AskResponse) -> AskEvent:
    """One streamed AskResponse as a client event."""
    kind = message.WhichOneof("event")
    if kind == "citations":
        return Citations([citation_from_proto(c) for c in message.citations.citations])
    if kind == "finished":
        return finished_from_proto(message.finished)
    return Delta(message.delta)


def citation_from_proto(c: gateway_pb2.Citation) -> Citation:
    return Citation(
        index=c.index,
        doc_id=c.doc_id,
        title=c.title,
        source=c.source,
        section=c.section,
        chunk_id=c.chunk_id,
        score=c.score,
        collection=c.collection,
        text=c.text,
        relevance=c.relevance,
    )


def finished_from_proto(f: gateway_pb2.AskFinished) -> Finished:
    reason = None
    if f.abstain_reason != gateway_pb2.ABSTAIN_REASON_UNSPECIFIED:
        name = gateway_pb2.AbstainReason.Name(f.abstain_reason)
        reason = name.removeprefix("ABSTAIN_REASON_").lower()
    t = f.timings
    return Finished(
        finish_reason="length" if f.finish_reason == common_pb2.FINISH_REASON_LENGTH else "stop",
        usage=Usage(f.usage.prompt_tokens, f.usage.completion_tokens),
        abstained=f.abstained or reason is not None,
        abstain_reason=reason,
        timings=Timings(
            embed_ms=t.embed_ms,
            retrieve_ms=t.retrieve_ms,
            rerank_ms=t.rerank_ms,
            prompt_ms=t.prompt_ms,
            time_to_first_token_ms=t.time_to_first_token_ms,
            generate_ms=t.generate_ms,
            total_ms=t.total_ms,
        ),
        unknown_names=tuple(f.unknown_names),
    )


def collection_from_proto(c: gateway_pb2.CollectionInfo) -> Collection:
    return Collection(
        name=c.name,
        embedding_model=c.model.id,
        dimension=c.model.dimension,
        chunk_count=c.chunk_count,
        document_count=c.document_count,
        description=c.description,
    )


def _pieces(documents: list[Document]) -> Iterator[list[Document]]:
    """A job's documents in pieces small enough for one call each."""
    piece: list[Document] = []
    size = 0
    for d in documents:
        length = len(d.content)
        if piece and (len(piece) >= JOB_PIECE_DOCUMENTS or size + length > JOB_PIECE_BYTES):
            yield piece
            piece, size = [], 0
        piece.append(d)
        size += length
    if piece:
        yield piece


JOB_STATUS_NAMES = {
    gateway_pb2.INGEST_JOB_STATUS_RECEIVING: "receiving",
    gateway_pb2.INGEST_JOB_STATUS_QUEUED: "queued",
    gateway_pb2.INGEST_JOB_STATUS_RUNNING: "running",
    gateway_pb2.INGEST_JOB_STATUS_SUCCEEDED: "succeeded",
    gateway_pb2.INGEST_JOB_STATUS_FAILED: "failed",
    gateway_pb2.INGEST_JOB_STATUS_CANCELLED: "cancelled",
}
RESULT_STATUSES = {
    "pending": IngestStatus.PENDING,
    "written": IngestStatus.WRITTEN,
    "unchanged": IngestStatus.UNCHANGED,
    "failed": IngestStatus.FAILED,
    "deleted": IngestStatus.DELETED,
}


def _job_status(status: str) -> Any:
    if not status:
        return gateway_pb2.INGEST_JOB_STATUS_UNSPECIFIED
    for value, name in JOB_STATUS_NAMES.items():
        if name == status:
            return value
    raise ValueError(f"status must be one of {', '.join(JOB_STATUS_NAMES.values())}")


def _stamp(message: Any, name: str) -> str:
    if not message.HasField(name):
        return ""
    return getattr(message, name).ToJsonString()


def job_from_proto(
    j: gateway_pb2.IngestJob,
    documents: Iterable[gateway_pb2.DocumentResult] = (),
    next_page_token: str = "",
) -> IngestJob:
    c = j.counts
    return IngestJob(
        id=j.id,
        collection=j.collection,
        status=JOB_STATUS_NAMES.get(j.status, "unknown"),
        counts=JobCounts(
            c.total,
            c.pending,
            c.written,
            c.unchanged,
            c.failed,
            c.deleted,
            c.chunks_written,
            c.chunks_deleted,
        ),
        error=j.error,
        delete_missing=j.delete_missing,
        doc_id_prefix=j.doc_id_prefix,
        cancel_requested=j.cancel_requested,
        attempts=j.attempts,
        create_time=_stamp(j, "create_time"),
        start_time=_stamp(j, "start_time"),
        finish_time=_stamp(j, "finish_time"),
        documents=tuple(
            IngestResult(
                d.doc_id, IngestStatus(d.status), d.chunks_written, d.chunks_deleted, d.error
            )
            for d in documents
        ),
        next_page_token=next_page_token,
    )


def job_from_json(j: dict[str, Any]) -> IngestJob:
    c = j["counts"]
    return IngestJob(
        id=j["id"],
        collection=j["collection"],
        status=j["status"],
        counts=JobCounts(**{k: int(c[k]) for k in JobCounts.__dataclass_fields__}),
        error=j.get("error") or "",
        delete_missing=bool(j.get("delete_missing")),
        doc_id_prefix=j.get("doc_id_prefix") or "",
        cancel_requested=bool(j.get("cancel_requested")),
        attempts=int(j.get("attempts") or 0),
        create_time=j.get("create_time") or "",
        start_time=j.get("start_time") or "",
        finish_time=j.get("finish_time") or "",
        documents=tuple(
            IngestResult(
                d["doc_id"],
                RESULT_STATUSES[d["status"]],
                int(d["chunks_written"]),
                int(d["chunks_deleted"]),
                d.get("error") or "",
            )
            for d in j.get("documents") or ()
        ),
        next_page_token=j.get("next_page_token") or "",
    )


def _document_json(d: Document) -> dict[str, Any]:
    content = d.content.encode() if isinstance(d.content, str) else d.content
    return {
        "doc_id": d.doc_id,
        "content_base64": base64.b64encode(content).decode(),
        "source": d.source,
        "title": d.title,
        "media_type": d.media_type,
        "tags": list(d.tags),
        "metadata": d.metadata,
    }


def document_from_proto(d: gateway_pb2.DocumentInfo) -> StoredDocument:
    return StoredDocument(
        doc_id=d.doc_id,
        title=d.title,
        source=d.source,
        doc_hash=d.doc_hash,
        chunk_count=d.chunk_count,
        tags=tuple(d.tags),
        metadata=dict(d.metadata),
    )


def collection_from_json(c: dict[str, Any]) -> Collection:
    model = c.get("embedding_model") or {}
    return Collection(
        name=c["name"],
        embedding_model=model.get("id", ""),
        dimension=int(model.get("dimension", 0)),
        chunk_count=int(c.get("chunk_count", 0)),
        document_count=int(c.get("document_count") or 0),
        description=c.get("description", ""),
    )


def document_from_json(d: dict[str, Any]) -> StoredDocument:
    return StoredDocument(
        doc_id=d["doc_id"],
        title=d.get("title", ""),
        source=d.get("source", ""),
        doc_hash=d.get("doc_hash", ""),
        chunk_count=int(d.get("chunk_count", 0)),
        tags=tuple(d.get("tags") or ()),
        metadata=dict(d.get("metadata") or {}),
    )


def hit_from_proto(h: common_pb2.ScoredChunk) -> Hit:
    c = h.chunk
    return Hit(
        chunk_id=c.id,
        doc_id=c.doc_id,
        title=c.title,
        source=c.source,
        section=c.section,
        text=c.text,
        collection=h.collection,
        score=h.score,
        relevance=h.relevance,
        position=c.position,
        tags=tuple(c.tags),
        rerank_score=h.rerank_score if h.reranked else None,
    )


def error_from_rpc(exc: grpc.aio.AioRpcError, *, connected: bool = True) -> GatewayError:
    """A failed call's status as a GatewayError; `connected` False marks UNAVAILABLE as
    no gateway reached."""
    code = exc.code()
    return GatewayError(
        code.name,
        exc.details() or code.name,
        unreachable=code == grpc.StatusCode.UNAVAILABLE and not connected,
    )


# ---- decoding: HTTP -----------------------------------------------------------------

GRPC_CODES = frozenset(c.name for c in grpc.StatusCode)
# The gRPC status behind an HTTP status, as the gateway's HTTP routes map them.
HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "FAILED_PRECONDITION",
    412: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED",
    # A document of a type ragplane cannot read (INVALID_ARGUMENT over gRPC).
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_from_http(status: int, body: str) -> GatewayError:
    """An HTTP error response (`{"error": {"message", "type", "code"}}`) as a
    GatewayError: the body's code when it is a gRPC status name, else one for the status."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        error = {"message": body.strip() or f"HTTP {status}"}
    fallback = HTTP_CODES.get(status, "INTERNAL" if status >= 500 else "UNKNOWN")
    return error_from_json(error, fallback, http_status=status)


def error_from_json(
    error: dict[str, Any], fallback: str, *, http_status: int | None = None
) -> GatewayError:
    named = str(error.get("code") or "").upper()
    return GatewayError(
        named if named in GRPC_CODES else fallback,
        str(error.get("message") or fallback),
        http_status=http_status,
    )


class SseDecoder:
    """Server-sent events, line by line: feed() returns an event's data when a blank line
    ends it, else None. Comments and fields other than data are skipped."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r\n")
        if not line:
            data, self._data = self._data, []
            return "\n".join(data) if data else None
        if line.startswith("data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


class ChatStreamDecoder:
    """OpenAI chat completion chunks, with the gateway's extra fields (`citations` in the
    first, `abstained`, `abstain_reason`, `timings` and `usage` towards the end), as
    client events; finish() gives the Finished event once the stream is over."""

    def __init__(self) -> None:
        self._cited = False
        self._finish_reason: str | None = None
        self._last: dict[str, Any] = {}
        self._usage = Usage()

    def feed(self, chunk: dict[str, Any]) -> list[AskEvent]:
        if isinstance(chunk.get("error"), dict):
            # Failed after the response had begun (status 200 already sent).
            raise error_from_json(chunk["error"], "INTERNAL")
        events: list[AskEvent] = []
        if chunk.get("citations") is not None and not self._cited:
            self._cited = True
            events.append(Citations([citation_from_json(c) for c in chunk["citations"]]))
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                events.append(Delta(text))
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            self._usage = usage_from_json(chunk["usage"])
        for key in ("abstained", "abstain_reason", "timings", "unknown_names"):
            if chunk.get(key) is not None:
                self._last[key] = chunk[key]
        return events

    def finish(self) -> Finished:
        if self._finish_reason is None:
            raise GatewayError("UNAVAILABLE", "the answer stream ended before it finished")
        return _finished_from_json(self._finish_reason, self._usage, self._last)


def decode_sse(text: str) -> list[AskEvent]:
    """Every event of a whole SSE body (what HttpClient.ask yields from a stream)."""
    sse, chat = SseDecoder(), ChatStreamDecoder()
    events: list[AskEvent] = []
    for data in _sse_data(sse, text.splitlines() + [""]):
        if data == "[DONE]":
            break
        events.extend(chat.feed(_json_object(data)))
    events.append(chat.finish())
    return events


def _sse_data(sse: SseDecoder, lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        data = sse.feed(line)
        if data is not None:
            yield data


def citation_from_json(c: dict[str, Any]) -> Citation:
    return Citation(
        index=int(c.get("index", 0)),
        doc_id=str(c.get("doc_id", "")),
        title=str(c.get("title", "")),
        source=str(c.get("source", "")),
        section=str(c.get("section", "")),
        chunk_id=str(c.get("chunk_id", "")),
        score=float(c.get("score") or 0.0),
        collection=str(c.get("collection", "")),
        text=str(c.get("text", "")),
        relevance=float(c.get("relevance") or 0.0),
    )


def usage_from_json(u: dict[str, Any]) -> Usage:
    return Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))


def _finished_from_json(finish_reason: str, usage: Usage, last: dict[str, Any]) -> Finished:
    reason = last.get("abstain_reason") or None
    timings = {k: float(v) for k, v in (last.get("timings") or {}).items() if k in TIMING_KEYS}
    return Finished(
        finish_reason="length" if finish_reason == "length" else "stop",
        usage=usage,
        abstained=bool(last.get("abstained")) or reason is not None,
        abstain_reason=str(reason).lower() if reason else None,
        timings=Timings(**timings),
        unknown_names=tuple(last.get("unknown_names") or ()),
    )


TIMING_KEYS = frozenset(asdict(Timings()))


def hit_from_json(h: dict[str, Any]) -> Hit:
    """A search hit: a ScoredChunk's fields, the chunk nested under `chunk` or not."""
    c = h.get("chunk") or h
    rerank = h.get("rerank_score")
    return Hit(
        chunk_id=str(c.get("chunk_id") or c.get("id") or ""),
        doc_id=str(c.get("doc_id", "")),
        title=str(c.get("title", "")),
        source=str(c.get("source", "")),
        section=str(c.get("section", "")),
        text=str(c.get("text", "")),
        collection=str(h.get("collection", "")),
        score=float(h.get("score") or 0.0),
        relevance=float(h.get("relevance") or 0.0),
        position=int(c.get("position") or 0),
        tags=tuple(c.get("tags") or ()),
        rerank_score=float(rerank) if rerank is not None and h.get("reranked", True) else None,
    )


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise GatewayError("INTERNAL", f"the gateway sent invalid JSON: {text[:200]!r}") from None
    if not isinstance(value, dict):
        raise GatewayError("INTERNAL", f"the gateway sent {type(value).__name__}, not an object")
    return value


def api_key_for(api_key: str | None = None) -> str | None:
    """The API key to send: `api_key`, else $RAGPLANE_API_KEY, else the one `ragplane up`
    wrote to the state dir (<state>/api-key); None when there is none."""
    if api_key:
        return api_key
    if from_env := os.environ.get(API_KEY_ENV, "").strip():
        return from_env
    return read_api_key(state_dir())


def api_key_metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying `api_key`."""
    return (("authorization", f"Bearer {api_key}"),)


class _ApiKey:
    def __init__(self, api_key: str) -> None:
        self._metadata = api_key_metadata(api_key)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = [*(details.metadata or ()), *self._metadata]
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )


class _UnaryUnaryApiKey(_ApiKey, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


class _UnaryStreamApiKey(_ApiKey, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


def api_key_interceptors(api_key: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that add `authorization: Bearer <key>` to every call of a channel
    (open_channel's `interceptors`), for code that calls the gateway's stub itself. Two
    objects: grpc.aio files an interceptor under the first call kind it implements only,
    so one object implementing both would never see the streaming calls (Ask)."""
    return [_UnaryUnaryApiKey(api_key), _UnaryStreamApiKey(api_key)]


def _read_file(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()
