"""Nothing accepted is lost, nothing is stored twice: the retriever, then Milvus Lite,
SIGKILLed while 200 PostgreSQL pages are being indexed; once the supervisor has
restarted it, the same pages are ingested again, and the collection's chunks (id,
document, position, content hash) equal those of a clean ingest into another
collection, row for row."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from ragplane.client import Document, GrpcClient
from ragplane.gateway.tenancy import stored_name
from ragplane.ops import processes, stack

PAGES = Path("/usr/share/doc/postgresql-doc-15/html")
PAGE_COUNT = 200
BATCH = 8  # documents per Ingest call, as the CLI sends them
TENANT = "local"  # the tenant of the stack's admin key
T = 300
RECOVER_S = 300.0

pytestmark = pytest.mark.skipif(
    not PAGES.is_dir(), reason=f"{PAGES} is missing: apt-get install postgresql-doc-15"
)


def pages() -> list[Path]:
    """200 pages spread over the whole manual (every n-th in name order)."""
    every = sorted(PAGES.glob("*.html"))
    step = max(1, len(every) // PAGE_COUNT)
    return every[::step][:PAGE_COUNT]


def documents(files: list[Path]) -> list[Document]:
    return [Document(doc_id=f.name, source=str(f), content=f.read_bytes()) for f in files]


async def ingest_all(client: GrpcClient, docs: list[Document], collection: str) -> int:
    """Every batch sent once; returns the calls or documents that failed (a dead
    dependency fails a call whole, or some of its documents)."""
    failed = 0
    for start in range(0, len(docs), BATCH):
        try:
            results = await client.ingest(
                docs[start : start + BATCH], collection=collection, timeout=T
            )
        except Exception:  # noqa: BLE001 - UNAVAILABLE while the victim is down
            failed += 1
            await asyncio.sleep(0.5)
            continue
        failed += sum(r.error != "" for r in results)
    return failed


def chunk_rows(layout: stack.StackLayout, collection: str) -> Counter[tuple]:
    """Every stored chunk as (id, doc_id, position, content_hash), counted: a duplicate
    shows as a count of 2. Tried again a few times: pymilvus reuses a connection that
    Milvus Lite may just have closed (GOAWAY "too many pings"), or one to the Milvus that
    was killed."""
    for attempt in range(5):
        try:
            return _chunk_rows(layout, collection)
        except MilvusException:
            if attempt == 4:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


def _chunk_rows(layout: stack.StackLayout, collection: str) -> Counter[tuple]:
    client = MilvusClient(uri=f"http://{layout.address('milvus')}")
    try:
        name = stored_name(TENANT, collection)
        client.load_collection(name)
        rows: Counter[tuple] = Counter()
        iterator = client.query_iterator(
            name,
            batch_size=1000,
            filter="",
            output_fields=["id", "doc_id", "position", "content_hash"],
        )
        while batch := iterator.next():
            rows.update((r["id"], r["doc_id"], r["position"], r["content_hash"]) for r in batch)
        iterator.close()
        return rows
    finally:
        client.close()


async def wait_serving(layout: stack.StackLayout, name: str, old_pid: int) -> None:
    deadline = time.monotonic() + RECOVER_S
    while time.monotonic() < deadline:
        pid = stack.running_pid(layout, name)
        if pid and pid != old_pid:
            if name == "milvus" or await processes.serving(layout.address(name)):
                return
        await asyncio.sleep(1)
    raise AssertionError(f"{name} was not restarted and serving within {RECOVER_S:.0f} s")


@pytest.fixture(scope="module")
async def clean(running_stack) -> tuple[list[Document], Counter[tuple]]:
    docs = documents(pages())
    async with GrpcClient(running_stack.address("gateway")) as client:
        assert await ingest_all(client, docs, "crash_clean") == 0
    return docs, chunk_rows(running_stack, "crash_clean")


@pytest.mark.parametrize("how", ["ingest", "job"])
@pytest.mark.parametrize("victim", ["retriever", "milvus"])
async def test_a_kill_mid_ingest_then_a_rerun_converges_to_the_clean_chunk_set(
    running_stack, clean, victim, how
):
    """`ingest`: synchronous Ingest calls, every failed one sent again after the restart.
    `job`: one ingestion job; whatever it did not write around the kill (its sub-batches
    retried, or failed documents) is written by running the same job again, which skips
    what is already stored."""
    docs, expected = clean
    assert len(docs) == PAGE_COUNT and sum(expected.values()) > PAGE_COUNT
    collection = f"crash_{victim}_{how}"
    layout = running_stack
    async with GrpcClient(layout.address("gateway")) as client:
        if how == "ingest":
            first = asyncio.create_task(ingest_all(client, docs, collection))
        else:
            job = await client.create_job(docs, collection=collection)
            first = asyncio.create_task(client.wait_job(job.id, timeout=2 * RECOVER_S))
        # Kill once a part of the pages is in: some stored, others not yet.
        while not first.done():
            await asyncio.sleep(0.5)
            if await _stored_documents(client, collection) >= PAGE_COUNT // 4:
                break
        pid = stack.running_pid(layout, victim)
        assert pid is not None and not first.done(), "the ingest ended before the kill"
        os.kill(pid, signal.SIGKILL)
        outcome = await first
        await wait_serving(layout, victim, pid)
        # The rerun: what was stored before the kill is UNCHANGED, the rest written.
        deadline = time.monotonic() + RECOVER_S
        while not await _rerun(client, docs, collection, how):
            assert time.monotonic() < deadline, "the rerun kept failing after the restart"
            await asyncio.sleep(2)
    rows = chunk_rows(layout, collection)
    print(f"\n{victim} killed mid-{how}: {outcome}; {sum(rows.values())} chunks")
    assert max(rows.values()) == 1, "a chunk is stored twice"
    assert rows == expected


async def _rerun(client: GrpcClient, docs: list[Document], collection: str, how: str) -> bool:
    """The same pages again; whether every one of them is now stored."""
    if how == "ingest":
        return await ingest_all(client, docs, collection) == 0
    try:
        job = await client.create_job(docs, collection=collection)
        done = await client.wait_job(job.id, timeout=RECOVER_S)
    except Exception:  # noqa: BLE001 - the gateway still finds the victim down
        return False
    return done.status == "succeeded" and done.counts.failed == 0


async def _stored_documents(client: GrpcClient, collection: str) -> int:
    try:
        return (await client.describe_collection(collection, timeout=10)).document_count
    except Exception:  # noqa: BLE001 - not created yet
        return 0
