"""Where ingestion jobs live: PostgreSQL, shared by every gateway replica (any of them
answers for any job, and takes over a job whose replica died).

A job's documents are stored with their bytes when it is accepted, so nothing accepted
is lost with a replica. Workers claim a job with `FOR UPDATE SKIP LOCKED` and hold it by
a lease they renew; a job whose lease ran out is claimed again by whoever asks next.
Every write of a worker names its lease, so a replica that lost its job (paused, cut
off) cannot overwrite the progress of the one that took it over.

psycopg 3 with psycopg_pool: the maintained PostgreSQL driver, asyncio-native, with a
pool that reconnects after the database restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ragplane.errors import Unavailable

log = logging.getLogger(__name__)

JobStatus = Literal["receiving", "queued", "running", "succeeded", "failed", "cancelled"]
DocumentStatus = Literal["pending", "written", "unchanged", "failed", "deleted"]
FINAL: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")
SCHEMA_VERSION = 1
# Held while the schema is made, so that replicas starting together do not race.
SCHEMA_LOCK = 0x7261670A

SCHEMA = """
CREATE TABLE IF NOT EXISTS ragplane_jobs_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS ingest_jobs (
    id uuid PRIMARY KEY,
    tenant text NOT NULL DEFAULT '',
    collection text NOT NULL,
    status text NOT NULL,
    delete_missing boolean NOT NULL DEFAULT false,
    doc_id_prefix text NOT NULL DEFAULT '',
    error text NOT NULL DEFAULT '',
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    lease_owner text NOT NULL DEFAULT '',
    lease_expires timestamptz,
    attempts integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ingest_jobs_claim ON ingest_jobs (status, created_at);
CREATE INDEX IF NOT EXISTS ingest_jobs_tenant ON ingest_jobs (tenant, created_at DESC);
CREATE TABLE IF NOT EXISTS ingest_job_documents (
    job_id uuid NOT NULL REFERENCES ingest_jobs (id) ON DELETE CASCADE,
    position integer NOT NULL,
    doc_id text NOT NULL,
    source text NOT NULL DEFAULT '',
    title text NOT NULL DEFAULT '',
    media_type text NOT NULL DEFAULT '',
    tags text[] NOT NULL DEFAULT '{}',
    metadata jsonb NOT NULL DEFAULT '{}',
    content bytea,
    size integer NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'pending',
    chunks_written integer NOT NULL DEFAULT 0,
    chunks_deleted integer NOT NULL DEFAULT 0,
    error text NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, position),
    UNIQUE (job_id, doc_id)
);
CREATE INDEX IF NOT EXISTS ingest_job_documents_pending
    ON ingest_job_documents (job_id, position) WHERE status = 'pending';
"""


@dataclass(frozen=True)
class NewDocument:
    """A document as a job receives it."""

    doc_id: str
    content: bytes
    source: str = ""
    title: str = ""
    media_type: str = ""
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QueuedDocument:
    """A pending document of a job, with its bytes, as a worker loads it."""

    position: int
    document: NewDocument


@dataclass(frozen=True)
class DocumentOutcome:
    """What happened to one document of a job."""

    position: int
    doc_id: str
    status: DocumentStatus
    chunks_written: int = 0
    chunks_deleted: int = 0
    error: str = ""


@dataclass(frozen=True)
class JobCounts:
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
        """Documents with an outcome (deletions of a sync not included)."""
        return self.written + self.unchanged + self.failed


@dataclass(frozen=True)
class Job:
    """A job as any replica reports it; times are Unix ms (0: not yet)."""

    id: str
    tenant: str
    collection: str
    status: JobStatus
    delete_missing: bool
    doc_id_prefix: str
    counts: JobCounts
    error: str
    cancel_requested: bool
    created_ms: int
    started_ms: int
    finished_ms: int
    attempts: int
    lease_owner: str

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class Claim:
    """A job a worker holds until `lease` seconds after its last renewal."""

    job_id: str
    tenant: str
    collection: str
    delete_missing: bool
    doc_id_prefix: str
    attempts: int


LeaseState = Literal["held", "cancel", "lost"]


def _ms(moment) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1000)


def _uuid(job_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(job_id)
    except ValueError:
        return None


class JobStore:
    """The jobs' tables over a connection pool; every method is one short transaction."""

    def __init__(self, dsn: str, *, max_connections: int = 8) -> None:
        self._pool = AsyncConnectionPool(
            dsn, min_size=1, max_size=max_connections, open=False, kwargs={"autocommit": False}
        )

    async def open(self, within_s: float = 60.0) -> None:
        """Connects (waiting for a database that is still starting) and makes the schema."""
        await self._pool.open(wait=False)
        deadline = time.monotonic() + within_s
        while True:
            try:
                await self._migrate()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(f"the jobs database is unreachable: {exc}") from None
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        await self._pool.close()

    async def _migrate(self) -> None:
        async with self._pool.connection(timeout=5.0) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            await conn.execute(SCHEMA)
            row = await (await conn.execute("SELECT version FROM ragplane_jobs_schema")).fetchone()
            if row is None:
                await conn.execute(
                    "INSERT INTO ragplane_jobs_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
                )
            elif row[0] > SCHEMA_VERSION:
                raise Unavailable(
                    f"the jobs database has schema version {row[0]}; this gateway knows "
                    f"{SCHEMA_VERSION}: upgrade it"
                )

    def _connection(self):
        return self._pool.connection(timeout=10.0)

    async def create(
        self,
        tenant: str,
        collection: str,
        documents: Sequence[NewDocument],
        *,
        delete_missing: bool = False,
        doc_id_prefix: str = "",
        receiving: bool = False,
    ) -> str:
        """Stores a job and its documents; it is queued, or `receiving` more documents
        (append) until closed. Returns its id."""
        job_id = uuid.uuid4()
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO ingest_jobs (id, tenant, collection, status, delete_missing,"
                " doc_id_prefix) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    job_id,
                    tenant,
                    collection,
                    "receiving" if receiving else "queued",
                    delete_missing,
                    doc_id_prefix,
                ),
            )
            await self._insert(conn, job_id, 0, documents)
        return str(job_id)

    async def append(
        self, job_id: str, tenant: str, documents: Sequence[NewDocument], close: bool
    ) -> tuple[Job, bool] | None:
        """Adds documents to a receiving job and, with `close`, queues it: the job and
        whether it was receiving (else nothing changed). None if there is no such job of
        this tenant."""
        key = _uuid(job_id)
        if key is None:
            return None
        async with self._connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT status FROM ingest_jobs WHERE id = %s AND tenant = %s FOR UPDATE",
                    (key, tenant),
                )
            ).fetchone()
            if row is None:
                return None
            receiving = row[0] == "receiving"
            if receiving:
                start = await (
                    await conn.execute(
                        "SELECT coalesce(max(position) + 1, 0) FROM ingest_job_documents"
                        " WHERE job_id = %s",
                        (key,),
                    )
                ).fetchone()
                await self._insert(conn, key, start[0] if start else 0, documents)
                if close:
                    await conn.execute(
                        "UPDATE ingest_jobs SET status = 'queued', updated_at = now()"
                        " WHERE id = %s",
                        (key,),
                    )
        job = await self.get(job_id, tenant)
        return None if job is None else (job, receiving)

    async def _insert(
        self,
        conn: psycopg.AsyncConnection,
        job_id: uuid.UUID,
        start: int,
        documents: Sequence[NewDocument],
    ) -> None:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO ingest_job_documents (job_id, position, doc_id, source, title,"
                " media_type, tags, metadata, content, size)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        job_id,
                        start + i,
                        d.doc_id,
                        d.source,
                        d.title,
                        d.media_type,
                        list(d.tags),
                        json.dumps(d.metadata),
                        d.content,
                        len(d.content),
                    )
                    for i, d in enumerate(documents)
                ],
            )

    async def doc_ids_taken(self, job_id: str, doc_ids: Sequence[str]) -> list[str]:
        """Which of these doc_ids the job holds already."""
        async with self._connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT doc_id FROM ingest_job_documents WHERE job_id = %s"
                    " AND doc_id = ANY(%s)",
                    (_uuid(job_id), list(doc_ids)),
                )
            ).fetchall()
        return [r[0] for r in rows]

    async def get(self, job_id: str, tenant: str) -> Job | None:
        """One job of this tenant, with its counts; None if there is none."""
        key = _uuid(job_id)
        if key is None:
            return None
        jobs = await self._select("WHERE j.id = %s AND j.tenant = %s", (key, tenant), 1)
        return jobs[0] if jobs else None

    async def list_jobs(
        self, tenant: str, limit: int, before_ms: int = 0, status: str = ""
    ) -> list[Job]:
        """This tenant's jobs, newest first; `before_ms`: created before then (paging)."""
        where, params = ["j.tenant = %s"], [tenant]
        if before_ms:
            where.append("j.created_at < to_timestamp(%s / 1000.0)")
            params.append(before_ms)  # type: ignore[arg-type]
        if status:
            where.append("j.status = %s")
            params.append(status)
        return await self._select("WHERE " + " AND ".join(where), params, limit)

    async def _select(self, where: str, params: Sequence[object], limit: int) -> list[Job]:
        query = f"""
            SELECT j.*, c.*
            FROM ingest_jobs j
            CROSS JOIN LATERAL (
                SELECT count(*) AS total,
                    count(*) FILTER (WHERE d.status = 'pending') AS pending,
                    count(*) FILTER (WHERE d.status = 'written') AS written,
                    count(*) FILTER (WHERE d.status = 'unchanged') AS unchanged,
                    count(*) FILTER (WHERE d.status = 'failed') AS failed,
                    count(*) FILTER (WHERE d.status = 'deleted') AS deleted,
                    coalesce(sum(d.chunks_written), 0) AS chunks_written,
                    coalesce(sum(d.chunks_deleted), 0) AS chunks_deleted
                FROM ingest_job_documents d WHERE d.job_id = j.id
            ) c
            {where}
            ORDER BY j.created_at DESC, j.id
            LIMIT {int(limit)}
        """
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            rows = await (await cur.execute(query, params)).fetchall()
        return [_job(r) for r in rows]

    async def documents(self, job_id: str, after: int, limit: int) -> list[DocumentOutcome]:
        """A job's documents by position, from `after` + 1: each with its outcome."""
        async with self._connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT position, doc_id, status, chunks_written, chunks_deleted, error"
                    " FROM ingest_job_documents WHERE job_id = %s AND position > %s"
                    " ORDER BY position LIMIT %s",
                    (_uuid(job_id), after, limit),
                )
            ).fetchall()
        return [DocumentOutcome(*r) for r in rows]

    async def cancel(self, job_id: str, tenant: str) -> Job | None:
        """Cancels a job not yet finished: at once if no worker holds it, else at the end
        of its current sub-batch. None if there is no such job of this tenant."""
        key = _uuid(job_id)
        if key is None:
            return None
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE ingest_jobs SET"
                " status = CASE WHEN status IN ('queued', 'receiving') THEN 'cancelled'"
                "   ELSE status END,"
                " finished_at = CASE WHEN status IN ('queued', 'receiving') THEN now()"
                "   ELSE finished_at END,"
                " cancel_requested = true, updated_at = now()"
                " WHERE id = %s AND tenant = %s AND status NOT IN ('succeeded', 'failed',"
                " 'cancelled')",
                (key, tenant),
            )
        return await self.get(job_id, tenant)

    async def claim(self, owner: str, lease_s: float) -> Claim | None:
        """The oldest job that is queued, or running under a lease that ran out (its
        replica died), now held by `owner`; None if there is none."""
        async with self._connection() as conn:
            row = await (
                await conn.execute(
                    "UPDATE ingest_jobs SET status = 'running', lease_owner = %s,"
                    " lease_expires = now() + make_interval(secs => %s),"
                    " started_at = coalesce(started_at, now()), attempts = attempts + 1,"
                    " updated_at = now()"
                    " WHERE id = (SELECT id FROM ingest_jobs WHERE status = 'queued'"
                    "   OR (status = 'running' AND lease_expires < now())"
                    "   ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)"
                    " RETURNING id, tenant, collection, delete_missing, doc_id_prefix,"
                    " attempts",
                    (owner, lease_s),
                )
            ).fetchone()
        if row is None:
            return None
        return Claim(str(row[0]), row[1], row[2], row[3], row[4], row[5])

    async def renew(self, job_id: str, owner: str, lease_s: float) -> LeaseState:
        """Extends the lease: `held`, `cancel` (a cancel was asked for) or `lost`."""
        async with self._connection() as conn:
            row = await (
                await conn.execute(
                    "UPDATE ingest_jobs SET lease_expires = now() + make_interval(secs => %s)"
                    " WHERE id = %s AND lease_owner = %s AND status = 'running'"
                    " RETURNING cancel_requested",
                    (lease_s, _uuid(job_id), owner),
                )
            ).fetchone()
        if row is None:
            return "lost"
        return "cancel" if row[0] else "held"

    async def pending_sizes(self, job_id: str, limit: int) -> list[tuple[int, int]]:
        """(position, bytes) of the job's first pending documents."""
        async with self._connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT position, size FROM ingest_job_documents"
                    " WHERE job_id = %s AND status = 'pending' ORDER BY position LIMIT %s",
                    (_uuid(job_id), limit),
                )
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    async def load(self, job_id: str, positions: Sequence[int]) -> list[QueuedDocument]:
        async with self._connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT position, doc_id, content, source, title, media_type, tags,"
                    " metadata FROM ingest_job_documents WHERE job_id = %s"
                    " AND position = ANY(%s) ORDER BY position",
                    (_uuid(job_id), list(positions)),
                )
            ).fetchall()
        return [
            QueuedDocument(
                r[0],
                NewDocument(
                    doc_id=r[1],
                    content=bytes(r[2] or b""),
                    source=r[3],
                    title=r[4],
                    media_type=r[5],
                    tags=tuple(r[6]),
                    metadata=dict(r[7]),
                ),
            )
            for r in rows
        ]

    async def all_doc_ids(self, job_id: str) -> set[str]:
        async with self._connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT doc_id FROM ingest_job_documents WHERE job_id = %s",
                    (_uuid(job_id),),
                )
            ).fetchall()
        return {r[0] for r in rows}

    async def record(self, job_id: str, owner: str, outcomes: Sequence[DocumentOutcome]) -> bool:
        """Writes outcomes while `owner` holds the job (False: it lost the job, nothing
        written). A deletion of a sync is a new row after the job's documents. The
        document's bytes are dropped once it has an outcome."""
        key = _uuid(job_id)
        async with self._connection() as conn:
            held = await (
                await conn.execute(
                    "SELECT 1 FROM ingest_jobs WHERE id = %s AND lease_owner = %s"
                    " AND status = 'running' FOR UPDATE",
                    (key, owner),
                )
            ).fetchone()
            if held is None:
                return False
            async with conn.cursor() as cur:
                for o in outcomes:
                    if o.status == "deleted":
                        await cur.execute(
                            "INSERT INTO ingest_job_documents (job_id, position, doc_id,"
                            " status, chunks_deleted) SELECT %s, coalesce(max(position) + 1,"
                            " 0), %s, 'deleted', %s FROM ingest_job_documents"
                            " WHERE job_id = %s ON CONFLICT (job_id, doc_id) DO NOTHING",
                            (key, o.doc_id, o.chunks_deleted, key),
                        )
                        continue
                    await cur.execute(
                        "UPDATE ingest_job_documents SET status = %s, chunks_written = %s,"
                        " chunks_deleted = %s, error = %s, content = NULL"
                        " WHERE job_id = %s AND position = %s",
                        (
                            o.status,
                            o.chunks_written,
                            o.chunks_deleted,
                            o.error,
                            key,
                            o.position,
                        ),
                    )
            await conn.execute("UPDATE ingest_jobs SET updated_at = now() WHERE id = %s", (key,))
        return True

    async def finish(self, job_id: str, owner: str, status: JobStatus, error: str = "") -> bool:
        """Ends a job `owner` holds, dropping the bytes of documents it left pending (a
        cancelled or failed job's); False if it no longer holds it."""
        async with self._connection() as conn:
            row = await (
                await conn.execute(
                    "UPDATE ingest_jobs SET status = %s, error = %s, finished_at = now(),"
                    " updated_at = now(), lease_expires = NULL"
                    " WHERE id = %s AND lease_owner = %s AND status = 'running' RETURNING id",
                    (status, error, _uuid(job_id), owner),
                )
            ).fetchone()
            if row is not None:
                await conn.execute(
                    "UPDATE ingest_job_documents SET content = NULL"
                    " WHERE job_id = %s AND content IS NOT NULL",
                    (_uuid(job_id),),
                )
        return row is not None

    async def forget_finished(self, older_than_s: float) -> int:
        """Deletes jobs that finished more than `older_than_s` ago, with their outcomes."""
        async with self._connection() as conn:
            cur = await conn.execute(
                "DELETE FROM ingest_jobs WHERE finished_at < now() - make_interval(secs => %s)",
                (older_than_s,),
            )
            return cur.rowcount

    async def release(self, job_id: str, owner: str, error: str = "") -> None:
        """Gives a job back at once (the gateway is stopping, a service is down): another
        replica, or this one restarted, resumes it without waiting for the lease to run
        out. `error` says why it waits."""
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE ingest_jobs SET status = 'queued', lease_owner = '',"
                " lease_expires = NULL, updated_at = now(), error = %s"
                " WHERE id = %s AND lease_owner = %s AND status = 'running'",
                (error, _uuid(job_id), owner),
            )

    async def fail_abandoned_uploads(self, idle_s: float) -> int:
        """Fails jobs still receiving documents after `idle_s` without any: their caller
        went away before closing them."""
        async with self._connection() as conn:
            cur = await conn.execute(
                "UPDATE ingest_jobs SET status = 'failed', finished_at = now(),"
                " error = 'the upload was never finished (no close within the time allowed)'"
                " WHERE status = 'receiving' AND updated_at < now() - make_interval(secs => %s)",
                (idle_s,),
            )
            return cur.rowcount


def _job(r: dict) -> Job:
    return Job(
        id=str(r["id"]),
        tenant=r["tenant"],
        collection=r["collection"],
        status=r["status"],
        delete_missing=r["delete_missing"],
        doc_id_prefix=r["doc_id_prefix"],
        counts=JobCounts(
            total=r["total"] - r["deleted"],
            pending=r["pending"],
            written=r["written"],
            unchanged=r["unchanged"],
            failed=r["failed"],
            deleted=r["deleted"],
            chunks_written=int(r["chunks_written"]),
            chunks_deleted=int(r["chunks_deleted"]),
        ),
        error=r["error"],
        cancel_requested=r["cancel_requested"],
        created_ms=_ms(r["created_at"]),
        started_ms=_ms(r["started_at"]),
        finished_ms=_ms(r["finished_at"]),
        attempts=r["attempts"],
        lease_owner=r["lease_owner"],
    )
