"""GatewayService's ingestion-job RPCs over gRPC: translation only, the logic is in
jobs.py. Mixed into GatewayServicer (grpc_api.py), which sets `_jobs`."""

from __future__ import annotations

import grpc

from ragplane.gateway.auth import caller_tenant
from ragplane.gateway.jobs import IngestJobs, new_document
from ragplane.gateway.jobs_store import DocumentOutcome, Job
from ragplane.v1 import gateway_pb2

JOB_STATUSES = {
    "receiving": gateway_pb2.INGEST_JOB_STATUS_RECEIVING,
    "queued": gateway_pb2.INGEST_JOB_STATUS_QUEUED,
    "running": gateway_pb2.INGEST_JOB_STATUS_RUNNING,
    "succeeded": gateway_pb2.INGEST_JOB_STATUS_SUCCEEDED,
    "failed": gateway_pb2.INGEST_JOB_STATUS_FAILED,
    "cancelled": gateway_pb2.INGEST_JOB_STATUS_CANCELLED,
}
JOB_STATUS_NAMES = {value: name for name, value in JOB_STATUSES.items()}
DOCUMENT_STATUSES = {
    "pending": gateway_pb2.INGEST_STATUS_PENDING,
    "written": gateway_pb2.INGEST_STATUS_WRITTEN,
    "unchanged": gateway_pb2.INGEST_STATUS_UNCHANGED,
    "failed": gateway_pb2.INGEST_STATUS_FAILED,
    "deleted": gateway_pb2.INGEST_STATUS_DELETED,
}


def tenant_of(context: grpc.aio.ServicerContext | None) -> str:
    """The caller's tenant (its API key's, auth.py); "" where there is none."""
    return caller_tenant()


class JobRpcs:
    _jobs: IngestJobs

    async def CreateIngestJob(self, request, context):  # noqa: N802 - gRPC method name
        """Accepts documents as a job; returns it queued (or receiving, more_documents)."""
        job = await self._jobs.create(
            request.collection,
            [new_document(d) for d in request.documents],
            delete_missing=request.delete_missing,
            doc_id_prefix=request.doc_id_prefix,
            more_documents=request.more_documents,
            tenant=tenant_of(context),
        )
        return gateway_pb2.GatewayServiceCreateIngestJobResponse(job=job_message(job))

    async def AddIngestJobDocuments(self, request, context):  # noqa: N802
        """Adds documents to a job created with more_documents; `last` queues it."""
        job = await self._jobs.add(
            request.job_id,
            [new_document(d) for d in request.documents],
            last=request.last,
            tenant=tenant_of(context),
        )
        return gateway_pb2.GatewayServiceAddIngestJobDocumentsResponse(job=job_message(job))

    async def GetIngestJob(self, request, context):  # noqa: N802
        """A job and a page of its documents' outcomes; NOT_FOUND if there is none."""
        report = await self._jobs.get(
            request.job_id,
            page_size=request.page_size,
            page_token=request.page_token,
            tenant=tenant_of(context),
        )
        return gateway_pb2.GatewayServiceGetIngestJobResponse(
            job=job_message(report.job),
            documents=[document_result(d) for d in report.documents],
            next_page_token=report.next_page_token,
        )

    async def ListIngestJobs(self, request, context):  # noqa: N802
        """The caller's jobs, newest first."""
        page = await self._jobs.list_jobs(
            page_size=request.page_size,
            page_token=request.page_token,
            status=JOB_STATUS_NAMES.get(request.status, ""),
            tenant=tenant_of(context),
        )
        return gateway_pb2.GatewayServiceListIngestJobsResponse(
            jobs=[job_message(j) for j in page.jobs], next_page_token=page.next_page_token
        )

    async def CancelIngestJob(self, request, context):  # noqa: N802
        """Cancels a job; a finished one is returned unchanged."""
        job = await self._jobs.cancel(request.job_id, tenant=tenant_of(context))
        return gateway_pb2.GatewayServiceCancelIngestJobResponse(job=job_message(job))


def job_message(job: Job) -> gateway_pb2.IngestJob:
    c = job.counts
    message = gateway_pb2.IngestJob(
        id=job.id,
        collection=job.collection,
        status=JOB_STATUSES[job.status],
        delete_missing=job.delete_missing,
        doc_id_prefix=job.doc_id_prefix,
        counts=gateway_pb2.IngestJobCounts(
            total=c.total,
            pending=c.pending,
            written=c.written,
            unchanged=c.unchanged,
            failed=c.failed,
            deleted=c.deleted,
            chunks_written=c.chunks_written,
            chunks_deleted=c.chunks_deleted,
        ),
        error=job.error,
        cancel_requested=job.cancel_requested,
        attempts=job.attempts,
    )
    for ms, stamp in (
        (job.created_ms, message.create_time),
        (job.started_ms, message.start_time),
        (job.finished_ms, message.finish_time),
    ):
        if ms:
            stamp.FromMilliseconds(ms)
    return message


def document_result(d: DocumentOutcome) -> gateway_pb2.DocumentResult:
    return gateway_pb2.DocumentResult(
        doc_id=d.doc_id,
        status=DOCUMENT_STATUSES[d.status],
        chunks_written=d.chunks_written,
        chunks_deleted=d.chunks_deleted,
        error=d.error,
    )
