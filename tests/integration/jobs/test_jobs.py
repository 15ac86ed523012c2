"""Ingestion jobs end to end, driven like a product backend: a folder handed over as a
job on both transports and watched to the end, re-run (nothing re-indexed), synced after
it changed (a removed file deleted), cancelled; two gateway processes over one database,
either answering for any job, the survivor taking over the job of the one killed."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time

import httpx
import pytest

from ragplane.client import (
    Document,
    GatewayClient,
    GatewayError,
    GrpcClient,
    HttpClient,
    IngestJob,
    IngestStatus,
)
from ragplane.gateway.jobs_store import JobStore
from ragplane.keys import Role, create_key
from ragplane.ops import jobs_cli
from tests.integration.jobs.conftest import CORPUS, handbook

T = 900.0  # the longest a job of these tests may take on a busy 2-core machine


@pytest.fixture(scope="module")
def grpc_client(channels) -> GrpcClient:
    return GrpcClient(channels["gateway"])


@pytest.fixture(scope="module")
async def http_client(running_stack):
    async with HttpClient(f"http://{running_stack.http_address()}") as client:
        yield client


async def _run(client: GatewayClient, job: IngestJob, reports: list | None = None) -> IngestJob:
    return await client.wait_job(
        job.id, poll_s=0.2, on_progress=None if reports is None else reports.append, timeout=T
    )


async def _stored(client: GatewayClient, collection: str) -> dict[str, tuple[str, int]]:
    documents, _ = await client.documents(collection, page_size=1000)
    return {d.doc_id: (d.doc_hash, d.chunk_count) for d in documents}


async def test_a_folder_as_a_job_on_both_transports(grpc_client, http_client):
    documents = handbook()
    stored = {}
    for client, collection in ((grpc_client, "jobs_grpc"), (http_client, "jobs_http")):
        reports: list[IngestJob] = []
        job = await client.create_job(documents, collection=collection)
        assert job.status in ("queued", "running", "succeeded")
        assert job.counts.total == len(documents)
        done = await _run(client, job, reports)
        assert done.status == "succeeded", done
        assert (done.counts.written, done.counts.failed) == (len(documents), 0), done
        assert done.counts.chunks_written > len(documents)
        assert done.start_time and done.finish_time
        progress = [r.counts.done for r in reports]
        assert progress == sorted(progress), "progress went backwards"
        results = await client.job_results(job.id)
        assert [r.doc_id for r in results] == [d.doc_id for d in documents]
        assert {r.status for r in results} == {IngestStatus.WRITTEN}
        listed, _ = await client.jobs(page_size=20)
        assert job.id in [j.id for j in listed]

        # Re-running the job is idempotent: every document unchanged, nothing written.
        again = await _run(client, await client.create_job(documents, collection=collection))
        assert again.status == "succeeded"
        assert (again.counts.unchanged, again.counts.chunks_written) == (len(documents), 0)
        stored[collection] = await _stored(client, collection)
    # Both doors made the same chunks.
    assert stored["jobs_grpc"] == stored["jobs_http"]
    assert len(stored["jobs_grpc"]) == len(documents)


async def test_sync_re_indexes_the_changed_and_deletes_the_removed(grpc_client, http_client):
    documents = handbook()
    await _run(grpc_client, await grpc_client.create_job(documents, collection="jobs_sync"))
    for client in (grpc_client, http_client):
        removed, changed, *kept = documents
        changed = dataclasses.replace(changed, content=bytes(changed.content) + b"\n\nRevised.\n")
        done = await _run(client, await client.sync([changed, *kept], collection="jobs_sync"))
        assert done.status == "succeeded", done
        c = done.counts
        assert (c.written, c.unchanged, c.deleted, c.failed) == (1, len(kept), 1, 0), done
        assert c.chunks_deleted > 0
        results = await client.job_results(done.id)
        assert [(r.doc_id, r.status) for r in results if r.status == IngestStatus.DELETED] == [
            (removed.doc_id, IngestStatus.DELETED)
        ]
        assert removed.doc_id not in await _stored(client, "jobs_sync")
        documents = [changed, *kept]


async def test_a_job_is_cancelled_at_once_or_after_its_sub_batch(grpc_client, http_client):
    # Still receiving documents: cancelled at once.
    first, *_ = handbook()
    open_job = await grpc_client._open_job(
        [first],
        collection="jobs_cancel",
        delete_missing=False,
        doc_id_prefix="",
        more_documents=True,
        timeout=60,
    )
    assert open_job.status == "receiving"
    cancelled = await http_client.cancel_job(open_job.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(GatewayError) as refused:
        await grpc_client._add_to_job(open_job.id, [first], last=True, timeout=60)
    assert refused.value.code == "FAILED_PRECONDITION"

    # Running: it stops after the sub-batch in flight, the rest left pending.
    many = [d for copy in "abcd" for d in handbook(f"{copy}/")]
    job = await grpc_client.create_job(many, collection="jobs_cancel")
    await grpc_client.cancel_job(job.id)
    done = await _run(grpc_client, job)
    assert done.status == "cancelled", done
    assert done.counts.pending > 0
    # Cancelling a finished job changes nothing.
    assert (await http_client.cancel_job(job.id)).status == "cancelled"


async def test_an_unknown_or_another_tenants_job_is_not_found(
    grpc_client, http_client, running_stack
):
    job = await grpc_client.create_job(handbook()[:1], collection="jobs_tenant")
    for client in (grpc_client, http_client):
        for job_id in ("0d7c3bd4-3a43-4f0c-9a3e-2f8f0a0d4a11", "not-a-job"):
            with pytest.raises(GatewayError) as missing:
                await client.job(job_id)
            assert missing.value.code == "NOT_FOUND"
    key, _ = create_key(running_stack.keys_file, "jobsothertenant", Role.WRITER, name="jobs test")
    async with GrpcClient(running_stack.address("gateway"), api_key=key) as other:
        deadline = time.monotonic() + 30
        while True:  # until the gateway has read the new key
            try:
                jobs, _ = await other.jobs()
                break
            except GatewayError as exc:
                if exc.code != "UNAUTHENTICATED" or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        assert job.id not in [j.id for j in jobs]
        for call in (other.job, other.cancel_job):
            with pytest.raises(GatewayError) as hidden:
                await call(job.id)
            assert hidden.value.code == "NOT_FOUND"
    await _run(grpc_client, job)


async def _running_on(dsn: str, job_id: str) -> int:
    """The pid of the gateway running the job, once it has done part of it."""
    store = JobStore(dsn)
    await store.open()
    try:
        deadline = time.monotonic() + T
        while True:
            seen = await store.get(job_id, "local")
            assert seen is not None
            if seen.lease_owner and seen.counts.done >= 1 and seen.counts.pending > 2:
                return int(seen.lease_owner.split(":")[1])
            assert not seen.final and time.monotonic() < deadline, seen
            await asyncio.sleep(0.05)
    finally:
        await store.close()


# One document per sub-batch and a short lease: a stop or a kill lands mid-job, and a
# takeover comes within seconds.
ONE_AT_A_TIME = {
    "RAGPLANE_GATEWAY_JOB_LEASE_SECONDS": "3",
    "RAGPLANE_GATEWAY_JOB_SUB_BATCH_DOCUMENTS": "1",
    "RAGPLANE_GATEWAY_JOB_WORKERS": "1",
}


async def test_a_job_survives_its_gateways_restart(start_gateway, jobs_database):
    first = await start_gateway(jobs_database, **ONE_AT_A_TIME)
    documents = handbook("restart/")
    async with GrpcClient(first.address) as client:
        job = await client.create_job(documents, collection="jobs_restart")
    assert await _running_on(jobs_database, job.id) == first.process.pid
    first.process.stop(timeout=60)  # SIGTERM: the job goes back to the queue at once
    second = await start_gateway(jobs_database, **ONE_AT_A_TIME)
    try:
        async with GrpcClient(second.address) as client:
            done = await _run(client, job)
    finally:
        second.process.stop(timeout=60)
    assert done.status == "succeeded", done
    assert done.attempts >= 2 and done.counts.failed == 0
    assert done.counts.written + done.counts.unchanged == len(documents)


async def test_two_gateways_share_jobs_and_the_survivor_takes_over(
    start_gateway, jobs_database, grpc_client
):
    a, b = await asyncio.gather(
        start_gateway(jobs_database, **ONE_AT_A_TIME), start_gateway(jobs_database, **ONE_AT_A_TIME)
    )
    documents = [d for copy in "ab" for d in handbook(f"{copy}/")]
    async with GrpcClient(a.address) as via_a, HttpClient(b.http_url) as via_b:
        job = await via_a.create_job(documents, collection="jobs_takeover")
        # Either gateway answers for any job.
        assert (await via_b.job(job.id)).id == job.id
        owner_pid = await _running_on(jobs_database, job.id)
        victim, survivor = (a, b) if owner_pid == a.process.pid else (b, a)
        assert owner_pid == victim.process.pid
        victim.process.popen.kill()
        victim.process.popen.wait()
        survivor_client = via_b if survivor is b else via_a
        done = await _run(survivor_client, job)
    assert done.status == "succeeded", done
    assert done.attempts >= 2
    assert done.counts.failed == 0
    assert done.counts.written + done.counts.unchanged == len(documents)

    # The chunks equal a clean synchronous ingest's of the same documents.
    for start in range(0, len(documents), 8):
        await grpc_client.ingest(documents[start : start + 8], collection="jobs_clean")
    assert await _stored(grpc_client, "jobs_takeover") == await _stored(grpc_client, "jobs_clean")


async def test_files_uploaded_as_a_job_over_http(running_stack, http_client):
    documents = handbook()[:3]
    key = running_stack.api_key()
    async with httpx.AsyncClient(
        base_url=f"http://{running_stack.http_address()}",
        headers={"authorization": f"Bearer {key}"},
        timeout=60,
    ) as http:
        reply = await http.post(
            "/v1/collections/jobs_upload/jobs/upload",
            files=[("files", (d.doc_id, d.content, "text/markdown")) for d in documents],
            data={"tags": ["handbook"]},
        )
        assert reply.status_code == 202, reply.text
        body = reply.json()
        assert body["object"] == "ingest_job" and body["counts"]["total"] == 3
        refused = await http.post(
            "/v1/collections/jobs_upload/jobs/upload",
            files=[("files", ("tool.exe", b"MZ", "application/octet-stream"))],
        )
        assert refused.status_code == 415, refused.text
        assert refused.json()["error"]["code"] == "unsupported_media_type"
    done = await http_client.wait_job(body["id"], timeout=T)
    assert (done.status, done.counts.written) == ("succeeded", 3), done


async def test_sync_ingest_reports_each_document_when_a_later_one_fails(grpc_client):
    good, other, *_ = handbook()
    refused = Document(
        doc_id="too-much-metadata.md",
        content=b"# Notes\n\nSome text.",
        metadata={f"key{i}": "v" for i in range(40)},  # over the retriever's limit
    )
    scan = Document(doc_id="scan.pdf", content=b"%PDF-1.4 not really a PDF")
    results = await grpc_client.ingest([good, refused, scan, other], collection="jobs_sync_ingest")
    assert [(r.doc_id, r.status) for r in results] == [
        (good.doc_id, IngestStatus.WRITTEN),
        (refused.doc_id, IngestStatus.FAILED),
        (scan.doc_id, IngestStatus.FAILED),
        (other.doc_id, IngestStatus.WRITTEN),
    ]
    assert "metadata" in results[1].error and results[2].error


async def test_ragplane_sync_draws_progress_and_reports(grpc_client):
    out = io.StringIO()
    job = await jobs_cli.run_job(grpc_client, [CORPUS], "jobs_cli", delete_missing=True, out=out)
    assert job is not None and job.status == "succeeded", out.getvalue()
    text = out.getvalue()
    assert f"{job.counts.total}/{job.counts.total}" in text
    assert f"job {job.id} succeeded: {job.counts.total} written" in text
