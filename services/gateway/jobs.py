"""Ingestion jobs: a batch of any size accepted at once, indexed in the background by
whichever gateway replica claims it, queryable and cancellable from any replica.

Both doors (grpc_api.py and http/jobs.py) call IngestJobs; the store (jobs_store.py) is
PostgreSQL, shared by every replica. A worker runs a job in sub-batches bounded by
documents and bytes, each with a deadline that scales with its size; a sub-batch that
fails on a slow or briefly absent stage is split and retried, so one slow stage fails
at most one document, never the batch. Resuming a job (after a restart, or by another
replica once the lease ran out) re-ingests its pending documents; the indexing pipeline
skips those already written unchanged (by hash), which makes resumption and re-running
a job idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import psycopg
from psycopg_pool import PoolTimeout

from ragplane.config import env_float, env_int, env_str
from ragplane.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RagplaneError,
    Unavailable,
)
from ragplane.gateway.clients import Deadline
from ragplane.gateway.collections import Collections
from ragplane.gateway.indexing import (
    MAX_DOCUMENTS_PER_REQUEST,
    IndexingPipeline,
    validate_document,
)
from ragplane.gateway.jobs_store import (
    DocumentOutcome,
    Job,
    JobStore,
    LeaseState,
    NewDocument,
    QueuedDocument,
)
from ragplane.gateway.tenancy import tenant_scope
from ragplane.server import status_of
from ragplane.v1 import gateway_pb2

log = logging.getLogger(__name__)

# Documents one create or append call may carry (a bigger job comes in several).
MAX_DOCUMENTS_PER_CALL = 1000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Worth retrying: the stage was slow, busy or briefly away.
TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}
STATUSES = ("receiving", "queued", "running", "succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class JobSettings:
    """How jobs run (RAGPLANE_GATEWAY_JOB_* in server.py)."""

    # Jobs one replica runs at once.
    workers: int = 2
    # A worker's hold on a job: renewed every heartbeat_s; once it runs out another
    # replica takes the job over.
    lease_s: float = 30.0
    heartbeat_s: float = 5.0
    # How often an idle worker looks for work.
    poll_s: float = 0.5
    sub_batch_documents: int = 32
    sub_batch_bytes: int = 8 * 1024 * 1024
    # A sub-batch's deadline: base + per document + per MiB.
    deadline_base_s: float = 30.0
    deadline_per_document_s: float = 5.0
    deadline_per_mib_s: float = 30.0
    # Retries of one document on a transient error, waits doubling from retry_wait_s.
    retries: int = 4
    retry_wait_s: float = 1.0
    # A job still receiving documents this long after its last is failed.
    upload_idle_s: float = 3600.0
    # A job put back in the queue because a service was down is not taken up by the
    # same worker again before this.
    requeue_wait_s: float = 10.0
    # Finished jobs (their outcomes) are kept this long, then deleted.
    retention_s: float = 7 * 86400.0

    @classmethod
    def from_env(cls) -> JobSettings:
        default = cls()
        lease = env_float("RAGPLANE_GATEWAY_JOB_LEASE_SECONDS", default.lease_s, minimum=2.0)
        return cls(
            workers=env_int("RAGPLANE_GATEWAY_JOB_WORKERS", default.workers, minimum=0),
            lease_s=lease,
            heartbeat_s=lease / 6,
            sub_batch_documents=env_int(
                "RAGPLANE_GATEWAY_JOB_SUB_BATCH_DOCUMENTS",
                default.sub_batch_documents,
                minimum=1,
                maximum=MAX_DOCUMENTS_PER_REQUEST,
            ),
            sub_batch_bytes=env_int(
                "RAGPLANE_GATEWAY_JOB_SUB_BATCH_BYTES", default.sub_batch_bytes, minimum=1024
            ),
            retention_s=86400.0
            * env_float("RAGPLANE_GATEWAY_JOB_RETENTION_DAYS", 7.0, minimum=0.01),
        )


async def open_jobs(indexing: IndexingPipeline, collections: Collections) -> IngestJobs:
    """The gateway's jobs, over the database RAGPLANE_GATEWAY_JOBS_DSN names (a
    PostgreSQL URI); without one, job calls answer FAILED_PRECONDITION."""
    dsn = env_str("RAGPLANE_GATEWAY_JOBS_DSN", "")
    store = None
    if dsn:
        store = JobStore(dsn)
        await store.open()
    return IngestJobs(store, indexing, collections, JobSettings.from_env())


def plan_sub_batch(
    sizes: Sequence[tuple[int, int]], max_documents: int, max_bytes: int
) -> list[int]:
    """The positions of the next sub-batch: the first pending documents, at most
    max_documents and max_bytes together, but always at least one."""
    chosen: list[int] = []
    total = 0
    for position, size in sizes[:max_documents]:
        if chosen and total + size > max_bytes:
            break
        chosen.append(position)
        total += size
    return chosen


def sub_batch_budget(documents: int, total_bytes: int, settings: JobSettings) -> float:
    """Seconds a sub-batch may take: grows with its documents and bytes, so a big one is
    not cut at a small one's deadline."""
    return (
        settings.deadline_base_s
        + settings.deadline_per_document_s * documents
        + settings.deadline_per_mib_s * total_bytes / (1024 * 1024)
    )


def document_proto(d: NewDocument) -> gateway_pb2.Document:
    return gateway_pb2.Document(
        doc_id=d.doc_id,
        source=d.source,
        title=d.title,
        media_type=d.media_type,
        content=d.content,
        tags=list(d.tags),
        metadata=d.metadata,
    )


def new_document(d: gateway_pb2.Document) -> NewDocument:
    return NewDocument(
        doc_id=d.doc_id,
        content=d.content,
        source=d.source,
        title=d.title,
        media_type=d.media_type,
        tags=tuple(d.tags),
        metadata=dict(d.metadata),
    )


def validate(documents: Sequence[NewDocument], *, allow_empty: bool = False) -> None:
    """INVALID_ARGUMENT before anything is stored: as for Ingest, but any number of
    documents in all (at most MAX_DOCUMENTS_PER_CALL per call)."""
    if not documents and not allow_empty:
        raise InvalidArgument("documents is empty")
    if len(documents) > MAX_DOCUMENTS_PER_CALL:
        raise InvalidArgument(
            f"{len(documents)} documents in one call; send at most {MAX_DOCUMENTS_PER_CALL} "
            "and add the rest to the job (more_documents, then AddIngestJobDocuments)"
        )
    seen: set[str] = set()
    for i, d in enumerate(documents):
        validate_document(i, document_proto(d), seen)


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    # "" on the last page.
    next_page_token: str


@dataclass(frozen=True)
class JobReport:
    """A job and a page of its documents' outcomes, by position."""

    job: Job
    documents: list[DocumentOutcome]
    next_page_token: str


class IngestJobs:
    """Create, add to, get, list and cancel jobs, and the workers that run them. Every
    call takes the caller's tenant; another tenant's job is NOT_FOUND."""

    def __init__(
        self,
        store: JobStore | None,
        indexing: IndexingPipeline,
        collections: Collections,
        settings: JobSettings | None = None,
        owner: str = "",
    ) -> None:
        self._store = store
        self._indexing = indexing
        self._collections = collections
        self.settings = settings or JobSettings()
        # Unique per process: a restarted replica does not mistake its old leases for its own.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise FailedPrecondition(
                "ingestion jobs need a database: set RAGPLANE_GATEWAY_JOBS_DSN "
                "(`ragplane up` starts one)"
            )
        return self._store

    # ---- the API ----

    async def create(
        self,
        collection: str,
        documents: Sequence[NewDocument],
        *,
        delete_missing: bool = False,
        doc_id_prefix: str = "",
        more_documents: bool = False,
        tenant: str = "",
    ) -> Job:
        """Stores the documents as a job and queues it (or, with more_documents, keeps it
        open for AddIngestJobDocuments). With delete_missing, the collection's documents
        whose doc_id starts with doc_id_prefix and that the job does not name are deleted
        once its documents are in (a sync)."""
        name = self._collections.name(collection)
        validate(documents, allow_empty=more_documents or delete_missing)
        async with _database():
            job_id = await self.store.create(
                tenant,
                name,
                documents,
                delete_missing=delete_missing,
                doc_id_prefix=doc_id_prefix,
                receiving=more_documents,
            )
            job = await self.store.get(job_id, tenant)
        assert job is not None
        return job

    async def add(
        self, job_id: str, documents: Sequence[NewDocument], *, last: bool, tenant: str = ""
    ) -> Job:
        """Adds documents to a job created with more_documents; `last` queues it."""
        validate(documents, allow_empty=True)
        async with _database():
            current = await self.store.get(job_id, tenant)
            if current is None:
                raise _no_job(job_id)
            if current.status == "receiving":
                taken = await self.store.doc_ids_taken(job_id, [d.doc_id for d in documents])
                if taken:
                    raise InvalidArgument(f"doc_id {taken[0]!r} is in the job already")
                appended = await self.store.append(job_id, tenant, documents, last)
            else:
                appended = (current, False)
        if appended is None:
            raise _no_job(job_id)
        job, receiving = appended
        if not receiving:
            raise FailedPrecondition(
                f"job {job_id} is {job.status}: documents are added only while it receives"
            )
        return job

    async def get(
        self, job_id: str, *, page_size: int = 0, page_token: str = "", tenant: str = ""
    ) -> JobReport:
        """A job, its counts and a page of its documents' outcomes."""
        size = _page_size(page_size)
        after = _token(page_token, first=-1)
        async with _database():
            job = await self.store.get(job_id, tenant)
            if job is None:
                raise _no_job(job_id)
            documents = await self.store.documents(job.id, after, size + 1)
        more = len(documents) > size
        documents = documents[:size]
        return JobReport(job, documents, str(documents[-1].position) if more else "")

    async def list_jobs(
        self, *, page_size: int = 0, page_token: str = "", status: str = "", tenant: str = ""
    ) -> JobPage:
        """The tenant's jobs, newest first."""
        if status and status not in STATUSES:
            raise InvalidArgument(f"status {status!r} is not one of {', '.join(STATUSES)}")
        size = _page_size(page_size)
        async with _database():
            jobs = await self.store.list_jobs(tenant, size + 1, _token(page_token), status)
        more = len(jobs) > size
        jobs = jobs[:size]
        return JobPage(jobs, str(jobs[-1].created_ms) if more else "")

    async def cancel(self, job_id: str, *, tenant: str = "") -> Job:
        """Cancels a job: at once if it waits, else after its current sub-batch. The
        documents written until then stay; a finished job is returned unchanged."""
        async with _database():
            job = await self.store.cancel(job_id, tenant)
        if job is None:
            raise _no_job(job_id)
        return job

    # ---- the workers ----

    def start(self) -> None:
        """Starts this replica's workers (nothing without a database)."""
        if self._store is None:
            return
        self._workers = [
            asyncio.create_task(self._work(), name=f"ingest-job-worker-{i}")
            for i in range(self.settings.workers)
        ]
        self._workers.append(asyncio.create_task(self._tidy(), name="ingest-job-tidy"))

    async def stop(self) -> None:
        """Stops the workers; a job in flight goes back to the queue at once, to be
        resumed by another replica (or this one, restarted)."""
        self._stopping.set()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def close(self) -> None:
        """Stops the workers, then closes the database connections."""
        await self.stop()
        if self._store is not None:
            await self._store.close()

    async def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                claim = await self.store.claim(self.owner, self.settings.lease_s)
            except (psycopg.Error, OSError, PoolTimeout) as exc:
                log.warning("jobs database: %s", exc)
                claim = None
            if claim is None:
                await asyncio.sleep(self.settings.poll_s)
                continue
            log.info("running job %s (attempt %d)", claim.job_id, claim.attempts)
            try:
                # Its retriever calls are confined to the job's tenant, as its caller's were.
                with tenant_scope(claim.tenant):
                    await self.run_job(
                        claim.job_id, claim.collection, claim.delete_missing, claim.doc_id_prefix
                    )
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.release(claim.job_id, self.owner))
                raise
            except Exception:
                log.exception("job %s: worker error", claim.job_id)

    async def _tidy(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(psycopg.Error, OSError, PoolTimeout):
                await self.store.fail_abandoned_uploads(self.settings.upload_idle_s)
                await self.store.forget_finished(self.settings.retention_s)
            await asyncio.sleep(60.0)

    async def run_job(
        self, job_id: str, collection: str, delete_missing: bool, doc_id_prefix: str
    ) -> None:
        """Runs a claimed job to its end, unless its lease is lost or it is cancelled."""
        lease = _Lease(self.store, job_id, self.owner, self.settings)
        lease.start()
        try:
            try:
                while await lease.check() == "held":
                    sizes = await self.store.pending_sizes(
                        job_id, self.settings.sub_batch_documents
                    )
                    if not sizes:
                        break
                    positions = plan_sub_batch(
                        sizes, self.settings.sub_batch_documents, self.settings.sub_batch_bytes
                    )
                    queued = await self.store.load(job_id, positions)
                    outcomes = await self._ingest(collection, queued)
                    if not await self.store.record(job_id, self.owner, outcomes):
                        return
                if lease.state == "held" and delete_missing:
                    await self._delete_missing(job_id, collection, doc_id_prefix, lease)
            except _DependencyDown as exc:
                log.warning("job %s back in the queue: %s", job_id, exc)
                await self.store.release(job_id, self.owner, f"waiting: {exc}")
                await asyncio.sleep(self.settings.requeue_wait_s)
                return
            except (RagplaneError, grpc.aio.AioRpcError) as exc:
                _, message = status_of(exc)
                await self.store.finish(job_id, self.owner, "failed", message)
                return
            if lease.state == "cancel":
                await self.store.finish(job_id, self.owner, "cancelled", "cancelled by request")
            elif lease.state == "held":
                await self.store.finish(job_id, self.owner, "succeeded")
        finally:
            await lease.stop()

    async def _ingest(
        self, collection: str, queued: Sequence[QueuedDocument], attempt: int = 0
    ) -> list[DocumentOutcome]:
        """Outcomes of one sub-batch; on an error it is split (one document alone retried
        with waits on a transient one) until each document has its own outcome. A
        collection/model mismatch fails the job."""
        documents = [document_proto(q.document) for q in queued]
        budget = sub_batch_budget(
            len(documents), sum(len(d.content) for d in documents), self.settings
        )
        try:
            results = await self._indexing.ingest(
                collection, documents, Deadline(budget * 2**attempt)
            )
        except Exception as exc:  # noqa: BLE001 - every error gets an outcome
            code, message = status_of(exc)
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                raise
            if len(queued) > 1:
                half = len(queued) // 2
                return [
                    *await self._ingest(collection, queued[:half]),
                    *await self._ingest(collection, queued[half:]),
                ]
            if code in TRANSIENT and attempt < self.settings.retries:
                log.warning("job document %s: %s; retrying", queued[0].document.doc_id, message)
                await asyncio.sleep(self.settings.retry_wait_s * 2**attempt)
                return await self._ingest(collection, queued, attempt + 1)
            if code == grpc.StatusCode.UNAVAILABLE:
                # A service behind the gateway is down, not this document's fault: the job
                # waits in the queue for it rather than fail its documents one by one.
                raise _DependencyDown(message) from None
            return [
                DocumentOutcome(
                    queued[0].position, queued[0].document.doc_id, "failed", error=message
                )
            ]
        statuses = {
            gateway_pb2.INGEST_STATUS_WRITTEN: "written",
            gateway_pb2.INGEST_STATUS_UNCHANGED: "unchanged",
            gateway_pb2.INGEST_STATUS_FAILED: "failed",
        }
        return [
            DocumentOutcome(
                q.position,
                r.doc_id,
                statuses[r.status],  # type: ignore[arg-type]
                r.chunks_written,
                r.chunks_deleted,
                r.error,
            )
            for q, r in zip(queued, results, strict=True)
        ]

    async def _delete_missing(
        self, job_id: str, collection: str, prefix: str, lease: _Lease
    ) -> None:
        """The sync's second half: deletes the collection's documents under `prefix`
        that the job does not name, each recorded as a `deleted` outcome."""
        named = await self.store.all_doc_ids(job_id)
        missing: list[str] = []
        token = ""
        while True:
            try:
                page = await self._collections.documents(
                    collection, MAX_PAGE_SIZE, token, self.settings.deadline_base_s
                )
            except NotFound:
                return  # no collection: nothing to delete
            missing.extend(
                d.doc_id
                for d in page.documents
                if d.doc_id.startswith(prefix) and d.doc_id not in named
            )
            token = page.next_page_token
            if not token:
                break
        for doc_id in missing:
            if lease.state != "held":
                return
            try:
                deleted = await self._collections.delete(
                    collection, doc_id, self.settings.deadline_base_s
                )
            except NotFound:
                continue  # deleted meanwhile
            outcome = DocumentOutcome(-1, doc_id, "deleted", chunks_deleted=deleted)
            if not await self.store.record(job_id, self.owner, [outcome]):
                return


class _DependencyDown(Exception):
    """A service behind the gateway stayed unavailable through the retries."""


class _Lease:
    """Renews a worker's lease every heartbeat; `state` turns to `cancel` when a cancel
    was asked for, `lost` when another replica holds the job now."""

    def __init__(self, store: JobStore, job_id: str, owner: str, settings: JobSettings) -> None:
        self._store = store
        self._job_id = job_id
        self._owner = owner
        self._settings = settings
        self.state: LeaseState = "held"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while self.state == "held":
            await asyncio.sleep(self._settings.heartbeat_s)
            try:
                self.state = await self._store.renew(
                    self._job_id, self._owner, self._settings.lease_s
                )
            except (psycopg.Error, OSError, PoolTimeout) as exc:
                # Keep working: the lease has lease_s to be renewed before it is lost.
                log.warning("job %s: lease not renewed: %s", self._job_id, exc)
        if self.state == "lost":
            log.warning("job %s: lease lost; another replica runs it now", self._job_id)

    async def check(self) -> LeaseState:
        """Renews now (before each sub-batch): a cancel takes effect after the current
        sub-batch, not a heartbeat later."""
        if self.state == "held":
            self.state = await self._store.renew(self._job_id, self._owner, self._settings.lease_s)
        return self.state

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def _database() -> AsyncIterator[None]:
    """The database's own errors as statuses a caller can act on."""
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        raise InvalidArgument(
            f"a doc_id appears twice in the job: {exc.diag.message_detail}"
        ) from None
    except (PoolTimeout, psycopg.OperationalError) as exc:
        raise Unavailable(f"the jobs database is unavailable: {exc}", retry_after=1) from None


def _no_job(job_id: str) -> NotFound:
    return NotFound(f"no ingestion job {job_id!r}")


def _page_size(page_size: int) -> int:
    if page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size is {page_size}; the limit is {MAX_PAGE_SIZE}")
    return page_size or DEFAULT_PAGE_SIZE


def _token(page_token: str, first: int = 0) -> int:
    if not page_token:
        return first
    try:
        return int(page_token)
    except ValueError:
        raise InvalidArgument(f"page_token {page_token!r} is not one this server gave") from None
