"""GrpcClient: ragplane.v1.GatewayService over gRPC, and the conversions between the
client's types and the ragplane.v1 messages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import grpc

from ragplane.channels import open_channel
from ragplane.client.auth import _read_file, api_key_for
from ragplane.client.base import (
    ASK_TIMEOUT_S,
    DELETE_TIMEOUT_S,
    INGEST_TIMEOUT_S,
    SEARCH_TIMEOUT_S,
    GatewayClient,
)
from ragplane.client.errors import GatewayError, error_from_rpc
from ragplane.client.types import (
    AskEvent,
    Citation,
    Citations,
    Collection,
    Delta,
    Document,
    Finished,
    Hit,
    IngestJob,
    IngestResult,
    IngestStatus,
    JobCounts,
    SearchMode,
    StoredDocument,
    Timings,
    Usage,
)
from ragplane.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

MODES: dict[str, common_pb2.SearchMode] = {
    "dense": common_pb2.SEARCH_MODE_DENSE,
    "keyword": common_pb2.SEARCH_MODE_KEYWORD,
    "hybrid": common_pb2.SEARCH_MODE_HYBRID,
}


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


def _mode(mode: SearchMode | None) -> common_pb2.SearchMode:
    if mode is None:
        return common_pb2.SEARCH_MODE_UNSPECIFIED
    try:
        return MODES[mode]
    except KeyError:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}") from None


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


JOB_STATUS_NAMES = {
    gateway_pb2.INGEST_JOB_STATUS_RECEIVING: "receiving",
    gateway_pb2.INGEST_JOB_STATUS_QUEUED: "queued",
    gateway_pb2.INGEST_JOB_STATUS_RUNNING: "running",
    gateway_pb2.INGEST_JOB_STATUS_SUCCEEDED: "succeeded",
    gateway_pb2.INGEST_JOB_STATUS_FAILED: "failed",
    gateway_pb2.INGEST_JOB_STATUS_CANCELLED: "cancelled",
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
