"""HttpClient: the gateway's OpenAI-compatible HTTP API, with the decoding of its
server-sent events and JSON bodies into the client's types."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx

from ragplane.client.auth import api_key_for
from ragplane.client.base import (
    ASK_TIMEOUT_S,
    DELETE_TIMEOUT_S,
    INGEST_TIMEOUT_S,
    SEARCH_TIMEOUT_S,
    GatewayClient,
)
from ragplane.client.errors import GatewayError, error_from_http
from ragplane.client.grpc_client import _mode
from ragplane.client.sse import ChatStreamDecoder, SseDecoder, _json_object
from ragplane.client.types import (
    AskEvent,
    Collection,
    Document,
    Hit,
    IngestJob,
    IngestResult,
    IngestStatus,
    JobCounts,
    SearchMode,
    StoredDocument,
)

# The chat `model` that means the gateway's default collection (HTTP).
DEFAULT_MODEL = "ragplane"


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


RESULT_STATUSES = {
    "pending": IngestStatus.PENDING,
    "written": IngestStatus.WRITTEN,
    "unchanged": IngestStatus.UNCHANGED,
    "failed": IngestStatus.FAILED,
    "deleted": IngestStatus.DELETED,
}


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
