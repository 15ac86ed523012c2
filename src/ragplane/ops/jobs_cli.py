"""`ragplane ingest --job`, `ragplane sync` and `ragplane jobs list | show | cancel`: the
ingestion-job commands, through ragplane.client like the others (cli.py parses them).

The progress bar is rich's: it redraws in place on a terminal and prints its last state
once elsewhere (a log, a pipe)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ragplane.client import Document, GatewayClient, IngestJob, IngestStatus
from ragplane.ops.cli import Skipped, find_documents

POLL_S = 0.5


async def run_job(
    gateway: GatewayClient,
    paths: list[Path],
    collection: str = "",
    *,
    delete_missing: bool = False,
    doc_id_prefix: str = "",
    wait: bool = True,
    out: TextIO = sys.stdout,
) -> IngestJob | None:
    """Hands the files under `paths` to the gateway as one job (a sync with
    delete_missing), then follows it with a progress bar and says what failed, what was
    deleted and what was skipped. None when there was nothing to send."""
    scanned = list(find_documents(paths))
    found = [entry for entry in scanned if not isinstance(entry, Skipped)]
    skipped = [entry for entry in scanned if isinstance(entry, Skipped)]
    for s in skipped:
        out.write(f"  skipped {s.path}: {s.reason}\n")
    if not found and not delete_missing:
        out.write("ragplane: nothing to index in " + ", ".join(map(str, paths)) + "\n")
        return None
    documents = [
        Document(doc_id=doc_id, source=str(file), content=file.read_bytes())
        for doc_id, file in found
    ]
    job = await gateway.create_job(
        documents,
        collection=collection,
        delete_missing=delete_missing,
        doc_id_prefix=doc_id_prefix,
    )
    out.write(f"job {job.id}: {job.counts.total} documents into {job.collection}\n")
    if not wait:
        return job
    job = await follow(gateway, job.id, out)
    await report(gateway, job, out)
    return job


async def follow(gateway: GatewayClient, job_id: str, out: TextIO = sys.stdout) -> IngestJob:
    """Draws the job's progress until it has finished; returns its last report."""
    console = Console(file=out, highlight=False)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("queued", total=None, detail="")

        def update(job: IngestJob) -> None:
            c = job.counts
            progress.update(
                task,
                description=job.status,
                total=c.total,
                completed=c.done,
                detail=f"{c.chunks_written} chunks, {c.failed} failed"
                + (f", {c.deleted} deleted" if c.deleted else ""),
            )

        return await gateway.wait_job(job_id, poll_s=POLL_S, on_progress=update)


async def report(gateway: GatewayClient, job: IngestJob, out: TextIO = sys.stdout) -> None:
    """The failed and deleted documents, then the counts."""
    if job.counts.failed or job.counts.deleted:
        for r in await gateway.job_results(job.id):
            if r.status == IngestStatus.FAILED:
                out.write(f"  failed {r.doc_id}: {r.error}\n")
            elif r.status == IngestStatus.DELETED:
                out.write(f"  deleted {r.doc_id} ({r.chunks_deleted} chunks)\n")
    out.write(summary(job) + "\n")


def summary(job: IngestJob) -> str:
    c = job.counts
    text = (
        f"job {job.id} {job.status}: {c.written} written, {c.unchanged} unchanged, "
        f"{c.failed} failed, {c.deleted} deleted, {c.pending} pending; "
        f"{c.chunks_written} chunks written"
    )
    return f"{text} ({job.error})" if job.error else text


async def jobs_command(
    gateway: GatewayClient, action: str, job_id: str, out: TextIO = sys.stdout
) -> int:
    """`ragplane jobs [list | show ID | watch ID | cancel ID]`."""
    if action == "list":
        found, _ = await gateway.jobs(page_size=50)
        for j in found:
            c = j.counts
            out.write(
                f"{j.id}  {j.status:<10} {j.collection:<20} {c.done:>6}/{c.total:<6} "
                f"{c.failed:>4} failed  {j.create_time}\n"
            )
        return 0
    if not job_id:
        out.write(f"ragplane: name the job to {action}\n")
        return 2
    if action == "cancel":
        job = await gateway.cancel_job(job_id)
    elif action == "watch":
        job = await follow(gateway, job_id, out)
    else:
        job = await gateway.job(job_id, page_size=1)
    await report(gateway, job, out)
    return 0
