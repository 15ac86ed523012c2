"""The HTTP routes: each one reads the request and the caller's deadline, calls
serving.py and writes the response (JSON, or server-sent events for a streamed answer)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse

from ragplane.gateway.http import errors
from ragplane.gateway.http import protocol as p
from ragplane.gateway.http.auth import authorize, open_stream
from ragplane.gateway.http.collections import CollectionServing, UploadedFile
from ragplane.gateway.http.jobs import JobServing
from ragplane.gateway.http.serving import HttpServing, InvalidParam

TIMEOUT_HEADER = "X-Request-Timeout"

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": p.ErrorResponse, "description": description}
    for status, description in {
        400: "Invalid request: bad input, over a limit, malformed JSON.",
        401: "No API key (`Authorization: Bearer <key>`), or an unknown or revoked one.",
        403: "The API key's role does not allow the route.",
        404: "Unknown collection (chat: model), document or route.",
        409: "The collection was made with another embedding model than the embedder runs.",
        413: "The request body is too large.",
        415: "Uploads only: a file of a type ragplane cannot read (named in the message).",
        429: "A queue is full or a quota is spent (the key's rate or streams, the "
        "tenant's storage); retry after Retry-After seconds.",
        503: "A service behind the gateway is unavailable.",
        504: "The request's deadline (X-Request-Timeout or the server's) passed.",
    }.items()
}
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A chat.completion; with stream=true, server-sent events: one "
        "`data: {chat.completion.chunk}` per event, then `data: [DONE]`.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}

# Every route: authenticated and authorized by its name (auth.HTTP_ROLES) first.
router = APIRouter(prefix="/v1", responses=ERRORS, dependencies=[Depends(authorize)])


def serving(request: Request) -> HttpServing:
    return request.app.state.serving


def budget(request: Request) -> float | None:
    """Seconds the caller allows: X-Request-Timeout, cut to the server's maximum."""
    limit: float | None = request.app.state.max_timeout
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return limit
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise InvalidParam(
            f"{TIMEOUT_HEADER} is {raw!r}: give seconds, a number over 0", TIMEOUT_HEADER
        )
    return seconds if limit is None else min(seconds, limit)


def collection_serving(request: Request) -> CollectionServing:
    return request.app.state.collections


Serving = Annotated[HttpServing, Depends(serving)]
CollectionsServing = Annotated[CollectionServing, Depends(collection_serving)]
Budget = Annotated[float | None, Depends(budget)]


@router.post("/chat/completions", response_model=p.ChatCompletion, responses=SSE_RESPONSE)
async def chat_completions(
    body: p.ChatCompletionRequest, serving: Serving, budget: Budget, request: Request
):
    """Answers the last user message from the collection named by `model`, with citations."""
    if not body.stream:
        return await serving.chat(body, budget)
    slot = open_stream(request)  # one of the key's streams, until the last event
    try:
        chunks = await serving.open_chat_stream(body, budget)
    except BaseException:
        slot.close()
        raise
    return StreamingResponse(
        server_sent_events(chunks, slot.close),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


@router.get("/models", response_model=p.ModelList)
async def list_models(serving: Serving, budget: Budget) -> p.ModelList:
    """The collections, each with its embedding model and size."""
    return await serving.models(budget)


@router.post("/embeddings", response_model=p.EmbeddingResponse)
async def create_embeddings(
    body: p.EmbeddingRequest, serving: Serving, budget: Budget
) -> p.EmbeddingResponse:
    """Vectors from the embedder the collections are made with."""
    return await serving.embeddings(body, budget)


@router.post("/search", response_model=p.SearchResponse)
async def search(body: p.SearchRequest, serving: Serving, budget: Budget) -> p.SearchResponse:
    """Retrieval only: the ranked chunks an answer would draw on, and whether it would
    abstain on them (the gRPC API's Search)."""
    return await serving.search(body, budget)


@router.post("/collections", response_model=p.CollectionObject, status_code=201)
async def create_collection(
    body: p.CollectionCreateRequest, response: Response, serving: CollectionsServing, budget: Budget
) -> p.CollectionObject:
    """Creates a collection bound to the embedder's model (201; 200 when it existed and
    exist_ok was given)."""
    created = await serving.create(body, budget)
    if not created.created:
        response.status_code = 200
    return created


@router.get("/collections", response_model=p.CollectionList)
async def list_collections(serving: CollectionsServing, budget: Budget) -> p.CollectionList:
    """Every collection, by name, with its model and chunk count."""
    return await serving.list_collections(budget)


@router.get("/collections/{name}", response_model=p.CollectionObject)
async def describe_collection(
    name: str, serving: CollectionsServing, budget: Budget
) -> p.CollectionObject:
    """One collection: model, description, chunk and document counts, times."""
    return await serving.describe(name, budget)


@router.delete("/collections/{name}", response_model=p.CollectionDeleted)
async def drop_collection(
    name: str, serving: CollectionsServing, budget: Budget
) -> p.CollectionDeleted:
    """Drops a collection and every document in it."""
    return await serving.drop(name, budget)


@router.get("/collections/{name}/documents", response_model=p.DocumentList)
async def list_documents(
    name: str,
    serving: CollectionsServing,
    budget: Budget,
    limit: Annotated[int, Query(ge=1, le=1000, description="Documents per page.")] = 100,
    page_token: Annotated[str, Query(description="The previous page's next_page_token.")] = "",
) -> p.DocumentList:
    """The collection's documents by doc_id, a page at a time."""
    return await serving.documents(name, limit, page_token, budget)


@router.post("/collections/{name}/documents", response_model=p.UploadResponse)
async def upload_documents(
    name: str,
    serving: CollectionsServing,
    budget: Budget,
    files: Annotated[list[UploadFile], File(description="The documents; doc_id: file name.")],
    tags: Annotated[list[str], Form(description="Tags for every file (repeatable).")] = [],  # noqa: B006
    metadata: Annotated[
        str | None, Form(description='A JSON object of strings: {"owner": "…"}.')
    ] = None,
) -> p.UploadResponse:
    """Indexes uploaded files (multipart/form-data): Markdown, HTML, text, PDF, DOCX,
    PPTX; any other type refuses the upload with 415, naming it."""
    uploaded = [UploadedFile(f.filename or "", f.content_type or "", await f.read()) for f in files]
    return await serving.upload(name, uploaded, tags, metadata, budget)


@router.get("/collections/{name}/documents/{doc_id:path}", response_model=p.DocumentObject)
async def get_document(
    name: str, doc_id: str, serving: CollectionsServing, budget: Budget
) -> p.DocumentObject:
    """One document: hash, chunk count, tags, metadata, when indexed (404 if absent)."""
    return await serving.get(name, doc_id, budget)


@router.patch("/collections/{name}/documents/{doc_id:path}", response_model=p.DocumentObject)
async def update_document(
    name: str,
    doc_id: str,
    body: p.DocumentUpdateRequest,
    serving: CollectionsServing,
    budget: Budget,
) -> p.DocumentObject:
    """Changes a document's tags, metadata or title without re-embedding it."""
    return await serving.update(name, doc_id, body, budget)


@router.delete("/collections/{name}/documents/{doc_id:path}", response_model=p.DocumentDeleted)
async def delete_document(
    name: str, doc_id: str, serving: CollectionsServing, budget: Budget
) -> p.DocumentDeleted:
    """Removes a document's chunks (404 if there is no such document)."""
    return await serving.delete(name, doc_id, budget)


# ---- ingestion jobs (http/jobs.py) ----


def job_serving(request: Request) -> JobServing:
    return request.app.state.jobs


JobsServing = Annotated[JobServing, Depends(job_serving)]


@router.post("/collections/{name}/jobs", response_model=p.JobObject, status_code=202)
async def create_job(name: str, body: p.JobCreateRequest, serving: JobsServing) -> p.JobObject:
    """Accepts documents (JSON) as an ingestion job that any gateway replica runs and
    reports on (202); with delete_missing, a sync."""
    return await serving.create(name, body)


@router.post("/collections/{name}/jobs/upload", response_model=p.JobObject, status_code=202)
async def upload_job(
    name: str,
    serving: JobsServing,
    files: Annotated[list[UploadFile], File(description="The documents; doc_id: file name.")],
    tags: Annotated[list[str], Form(description="Tags for every file (repeatable).")] = [],  # noqa: B006
    metadata: Annotated[
        str | None, Form(description='A JSON object of strings: {"owner": "…"}.')
    ] = None,
    delete_missing: Annotated[bool, Form(description="A sync (see the JSON route).")] = False,
    doc_id_prefix: Annotated[str, Form()] = "",
    more_documents: Annotated[bool, Form()] = False,
) -> p.JobObject:
    """Uploaded files (multipart/form-data) as an ingestion job (202)."""
    uploaded = [UploadedFile(f.filename or "", f.content_type or "", await f.read()) for f in files]
    return await serving.upload(
        name, uploaded, tags, metadata, delete_missing, doc_id_prefix, more_documents
    )


@router.post("/jobs/{job_id}/documents", response_model=p.JobObject)
async def add_job_documents(
    job_id: str, body: p.JobDocumentsRequest, serving: JobsServing
) -> p.JobObject:
    """Adds documents to a job created with more_documents; last=true queues it."""
    return await serving.add(job_id, body)


@router.get("/jobs", response_model=p.JobList)
async def list_jobs(
    serving: JobsServing,
    limit: Annotated[int, Query(ge=1, le=1000, description="Jobs per page.")] = 100,
    page_token: Annotated[str, Query(description="The previous page's next_page_token.")] = "",
    status: Annotated[str, Query(description="Only jobs in this status.")] = "",
) -> p.JobList:
    """The caller's ingestion jobs, newest first."""
    return await serving.list_jobs(limit, page_token, status)


@router.get("/jobs/{job_id}", response_model=p.JobObject)
async def get_job(
    job_id: str,
    serving: JobsServing,
    limit: Annotated[int, Query(ge=1, le=1000, description="Document outcomes per page.")] = 100,
    page_token: Annotated[str, Query(description="The previous page's next_page_token.")] = "",
) -> p.JobObject:
    """A job: status, counts, times and a page of its documents' outcomes (404 if absent)."""
    return await serving.get(job_id, limit, page_token)


@router.post("/jobs/{job_id}/cancel", response_model=p.JobObject)
async def cancel_job(job_id: str, serving: JobsServing) -> p.JobObject:
    """Cancels a job: at once if it waits, else after its current sub-batch."""
    return await serving.cancel(job_id)


async def server_sent_events(
    chunks: AsyncIterator[p.ChatCompletionChunk], on_close: Callable[[], object] = lambda: None
) -> AsyncIterator[str]:
    """OpenAI's framing: `data: <json>` and a blank line per chunk, then `data: [DONE]`;
    an error once the stream has begun is one `data: {"error": ...}` event, and no [DONE].
    `on_close` runs when the stream ends, however it ends."""
    try:
        async for chunk in chunks:
            yield f"data: {chunk.model_dump_json()}\n\n"
    except Exception as exc:  # noqa: BLE001 - the status line is already sent
        yield f"data: {errors.stream_error(exc)}\n\n"
        return
    finally:
        on_close()
    yield "data: [DONE]\n\n"
