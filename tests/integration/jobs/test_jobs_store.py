"""The jobs' store on a real PostgreSQL, as two replicas see it: one claim per job however
many ask at once, a lapsed lease taken over, the replica that lost a job unable to write
to it, tenants apart, a job given back at shutdown resumed at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ragplane.gateway.jobs_store import DocumentOutcome, JobStore, NewDocument


@pytest.fixture
async def replicas(jobs_database) -> AsyncIterator[tuple[JobStore, JobStore]]:
    a, b = JobStore(jobs_database), JobStore(jobs_database)
    # Both make the schema at once, as replicas starting together do.
    await asyncio.gather(a.open(), b.open())
    # Each test starts with no job waiting.
    while await a.claim("drain", 3600) is not None:
        pass
    yield a, b
    await asyncio.gather(a.close(), b.close())


def _documents(n: int) -> list[NewDocument]:
    return [NewDocument(f"doc-{i}.md", f"# Doc {i}\n\ntext".encode()) for i in range(n)]


async def test_a_job_is_claimed_once_however_many_ask(replicas):
    a, b = replicas
    job_id = await a.create("t1", "docs", _documents(3))
    claims = await asyncio.gather(*(s.claim(f"w{i}", 30) for i, s in enumerate([a, b] * 4)))
    assert [c.job_id for c in claims if c is not None] == [job_id]


async def test_a_lapsed_lease_is_taken_over_and_the_old_owner_is_shut_out(replicas):
    a, b = replicas
    job_id = await a.create("t1", "docs", _documents(2))
    assert (await a.claim("A", 0.5)).job_id == job_id
    assert await b.claim("B", 30) is None  # held
    assert await a.record(job_id, "A", [DocumentOutcome(0, "doc-0.md", "written", 4)])
    await asyncio.sleep(0.8)  # A stops renewing: its replica died
    taken = await b.claim("B", 30)
    assert taken is not None and taken.job_id == job_id and taken.attempts == 2
    assert await a.renew(job_id, "A", 30) == "lost"
    assert not await a.record(job_id, "A", [DocumentOutcome(1, "doc-1.md", "failed")])
    assert not await a.finish(job_id, "A", "failed")
    # B resumes where A left off: only the document without an outcome is pending.
    assert [p for p, _ in await b.pending_sizes(job_id, 10)] == [1]
    assert await b.record(job_id, "B", [DocumentOutcome(1, "doc-1.md", "written", 2)])
    assert await b.finish(job_id, "B", "succeeded")
    job = await a.get(job_id, "t1")
    assert job is not None
    assert (job.status, job.counts.written, job.counts.chunks_written) == ("succeeded", 2, 6)


async def test_another_tenants_job_does_not_exist_for_it(replicas):
    a, b = replicas
    job_id = await a.create("t1", "docs", _documents(1))
    assert await b.get(job_id, "t2") is None
    assert await b.cancel(job_id, "t2") is None
    assert job_id not in [j.id for j in await b.list_jobs("t2", 100)]
    assert job_id in [j.id for j in await b.list_jobs("t1", 100)]
    assert await b.get("not-a-uuid", "t1") is None


async def test_a_job_receives_documents_until_closed(replicas):
    a, b = replicas
    job_id = await a.create("t1", "docs", _documents(2), receiving=True)
    assert await b.claim("B", 30) is None  # not queued while receiving
    more = [NewDocument("late.md", b"# Late")]
    appended = await b.append(job_id, "t1", more, close=True)
    assert appended is not None
    job, receiving = appended
    assert receiving and (job.status, job.counts.total) == ("queued", 3)
    # Closed: nothing more is taken.
    again = await b.append(job_id, "t1", [NewDocument("later.md", b"# Later")], close=True)
    assert again is not None and not again[1] and again[0].counts.total == 3
    claim = await a.claim("A", 30)
    assert claim is not None and claim.job_id == job_id
    loaded = await a.load(job_id, [2])
    assert loaded[0].document.doc_id == "late.md" and loaded[0].document.content == b"# Late"


async def test_cancel_is_immediate_when_waiting_and_flagged_when_running(replicas):
    a, b = replicas
    waiting = await a.create("t1", "docs", _documents(1))
    assert (await b.cancel(waiting, "t1")).status == "cancelled"
    running = await a.create("t1", "docs", _documents(1))
    assert (await a.claim("A", 30)).job_id == running
    flagged = await b.cancel(running, "t1")
    assert flagged.status == "running" and flagged.cancel_requested
    assert await a.renew(running, "A", 30) == "cancel"


async def test_a_job_given_back_at_shutdown_is_resumed_at_once(replicas):
    a, b = replicas
    job_id = await a.create("t1", "docs", _documents(2))
    assert (await a.claim("A", 3600)).job_id == job_id
    await a.release(job_id, "A")
    resumed = await b.claim("B", 30)
    assert resumed is not None and resumed.job_id == job_id


async def test_a_sync_deletion_is_recorded_once(replicas):
    a, _ = replicas
    job_id = await a.create("t1", "docs", _documents(1), delete_missing=True)
    await a.claim("A", 30)
    gone = DocumentOutcome(-1, "gone.md", "deleted", chunks_deleted=5)
    assert await a.record(job_id, "A", [gone])
    assert await a.record(job_id, "A", [gone])  # a resumed sync deletes nothing twice
    job = await a.get(job_id, "t1")
    assert (job.counts.total, job.counts.deleted, job.counts.chunks_deleted) == (1, 1, 5)
    outcomes = await a.documents(job_id, -1, 10)
    assert [(o.position, o.doc_id, o.status) for o in outcomes] == [
        (0, "doc-0.md", "pending"),
        (1, "gone.md", "deleted"),
    ]
