"""What the ingestion-job routes call: protocol requests become calls of gateway/jobs.py,
its jobs protocol objects. No HTTP here beyond the uploaded files' names and types."""

from __future__ import annotations

import base64
import binascii

from ragplane.gateway.auth import caller_tenant
from ragplane.gateway.http import protocol as p
from ragplane.gateway.http.collections import UploadedFile, _media_type, _metadata, _time
from ragplane.gateway.http.serving import InvalidParam
from ragplane.gateway.jobs import IngestJobs
from ragplane.gateway.jobs_store import DocumentOutcome, Job, NewDocument


class JobServing:
    """The job routes over gateway/jobs.py, each for the caller's tenant (auth.py)."""

    def __init__(self, jobs: IngestJobs) -> None:
        self._jobs = jobs

    async def create(self, collection: str, request: p.JobCreateRequest) -> p.JobObject:
        job = await self._jobs.create(
            collection,
            [_document(d, f"documents.{i}") for i, d in enumerate(request.documents)],
            delete_missing=request.delete_missing,
            doc_id_prefix=request.doc_id_prefix,
            more_documents=request.more_documents,
            tenant=caller_tenant(),
        )
        return job_object(job)

    async def upload(
        self,
        collection: str,
        files: list[UploadedFile],
        tags: list[str],
        metadata: str | None,
        delete_missing: bool,
        doc_id_prefix: str,
        more_documents: bool,
    ) -> p.JobObject:
        """Files as a job, each under its file name (a relative path keeps its folders)
        as doc_id."""
        extra = _metadata(metadata)
        documents = [
            NewDocument(
                doc_id=f.filename,
                content=f.content,
                source=f.filename,
                media_type=_media_type(f),
                tags=tuple(tags),
                metadata=extra,
            )
            for f in files
        ]
        job = await self._jobs.create(
            collection,
            documents,
            delete_missing=delete_missing,
            doc_id_prefix=doc_id_prefix,
            more_documents=more_documents,
            tenant=caller_tenant(),
        )
        return job_object(job)

    async def add(self, job_id: str, request: p.JobDocumentsRequest) -> p.JobObject:
        documents = [_document(d, f"documents.{i}") for i, d in enumerate(request.documents)]
        return job_object(
            await self._jobs.add(job_id, documents, last=request.last, tenant=caller_tenant())
        )

    async def get(self, job_id: str, limit: int, page_token: str) -> p.JobObject:
        report = await self._jobs.get(
            job_id, page_size=limit, page_token=page_token, tenant=caller_tenant()
        )
        return job_object(
            report.job,
            documents=[document_result(d) for d in report.documents],
            next_page_token=report.next_page_token or None,
        )

    async def list_jobs(self, limit: int, page_token: str, status: str) -> p.JobList:
        page = await self._jobs.list_jobs(
            page_size=limit, page_token=page_token, status=status, tenant=caller_tenant()
        )
        return p.JobList(
            data=[job_object(j) for j in page.jobs], next_page_token=page.next_page_token or None
        )

    async def cancel(self, job_id: str) -> p.JobObject:
        return job_object(await self._jobs.cancel(job_id, tenant=caller_tenant()))


def _document(d: p.JobDocument, param: str) -> NewDocument:
    if (d.content is None) == (d.content_base64 is None):
        raise InvalidParam(f"{param}: give content or content_base64 (one of them)", param)
    if d.content_base64 is not None:
        try:
            content = base64.b64decode(d.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParam(
                f"{param}.content_base64 is not base64", f"{param}.content_base64"
            ) from None
    else:
        content = (d.content or "").encode()
    return NewDocument(
        doc_id=d.doc_id,
        content=content,
        source=d.source,
        title=d.title,
        media_type=d.media_type,
        tags=tuple(d.tags),
        metadata=d.metadata,
    )


def job_object(
    job: Job,
    documents: list[p.JobDocumentResult] | None = None,
    next_page_token: str | None = None,
) -> p.JobObject:
    c = job.counts
    return p.JobObject(
        id=job.id,
        collection=job.collection,
        status=job.status,
        delete_missing=job.delete_missing,
        doc_id_prefix=job.doc_id_prefix,
        counts=p.JobCounts(
            total=c.total,
            pending=c.pending,
            written=c.written,
            unchanged=c.unchanged,
            failed=c.failed,
            deleted=c.deleted,
            chunks_written=c.chunks_written,
            chunks_deleted=c.chunks_deleted,
        ),
        error=job.error or None,
        cancel_requested=job.cancel_requested,
        create_time=_time(job.created_ms),
        start_time=_time(job.started_ms),
        finish_time=_time(job.finished_ms),
        attempts=job.attempts,
        documents=documents,
        next_page_token=next_page_token,
    )


def document_result(d: DocumentOutcome) -> p.JobDocumentResult:
    return p.JobDocumentResult(
        doc_id=d.doc_id,
        status=d.status,
        chunks_written=d.chunks_written,
        chunks_deleted=d.chunks_deleted,
        error=d.error or None,
    )
