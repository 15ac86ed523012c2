"""GatewayClient, what both transports offer, with what they share: the default
deadlines and sending a job's documents in pieces."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Self

from ragplane.client.errors import GatewayError
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
    SearchMode,
    StoredDocument,
)

# Each method's `timeout` is its call's deadline, which gRPC sends to the gateway (hence
# not an asyncio.timeout around the call).
ASK_TIMEOUT_S = 180.0
SEARCH_TIMEOUT_S = 60.0
INGEST_TIMEOUT_S = 300.0
# Each call that hands a job its documents; a job is sent in pieces of at most these.
JOB_CALL_TIMEOUT_S = 120.0
JOB_PIECE_DOCUMENTS = 200
JOB_PIECE_BYTES = 16 * 1024 * 1024
DELETE_TIMEOUT_S = 60.0


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
