"""Ingestion jobs: what a job costs over a direct Ingest of the same documents, side by
side in one run (ABAB…, fresh collections each time): the handbook indexed from nothing,
and re-run with every document unchanged (where the job's fixed costs show most).

A job's extra work: its documents stored in PostgreSQL at acceptance, a worker's pick-up
(it polls every 0.5 s), sub-batches read back, an outcome written per sub-batch, and the
client polling for the end (every 0.1 s here)."""

from __future__ import annotations

import os
import time
from typing import Any

from bench.harness import CORPUS, Bench, alternate
from ragplane.client import Document, GrpcClient
from ragplane.ops.cli import find_documents

# The direct baseline sends what a job's worker sends: sub-batches of this many documents.
BATCH = 32
POLL_S = 0.1


def handbook(smoke: bool) -> list[Document]:
    found = [entry for entry in find_documents([CORPUS]) if isinstance(entry, tuple)]
    documents = [
        Document(doc_id=doc_id, source=str(file), content=file.read_bytes())
        for doc_id, file in found
    ]
    return documents[:6] if smoke else documents


async def run(bench: Bench) -> dict[str, Any]:
    client = GrpcClient(bench.channel("gateway"))
    documents = handbook(bench.smoke)
    runs = 2 if bench.smoke else int(os.environ.get("RAGPLANE_BENCH_JOB_RUNS", "5"))
    counter = iter(range(10_000))

    async def direct(collection: str) -> float:
        started = time.perf_counter()
        for i in range(0, len(documents), BATCH):
            await client.ingest(documents[i : i + BATCH], collection=collection, timeout=3600)
        return time.perf_counter() - started

    async def as_job(collection: str) -> float:
        started = time.perf_counter()
        job = await client.create_job(documents, collection=collection)
        done = await client.wait_job(job.id, poll_s=POLL_S, timeout=3600)
        if done.status != "succeeded" or done.counts.failed:
            raise RuntimeError(f"the benchmark's job did not succeed: {done}")
        return time.perf_counter() - started

    def fresh(measure):
        async def once() -> float:
            collection = f"bench_jobs_{next(counter)}"
            try:
                return await measure(collection)
            finally:
                await client.drop_collection(collection)

        return once

    def unchanged(measure):
        async def once() -> float:
            collection = f"bench_jobs_{next(counter)}"
            await direct(collection)
            try:
                return await measure(collection)
            finally:
                await client.drop_collection(collection)

        return once

    return {
        "what": "an ingestion job (create, worker, poll to the end) vs direct Ingest calls "
        f"of the same {len(documents)} documents in batches of {BATCH}; seconds per pass, "
        "ratio = job / direct per pair",
        "documents": len(documents),
        "fresh": await alternate(runs, fresh(direct), fresh(as_job)),
        "unchanged": await alternate(runs, unchanged(direct), unchanged(as_job)),
    }
