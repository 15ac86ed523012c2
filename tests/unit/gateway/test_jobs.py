"""Ingestion jobs without a database: sub-batch planning and deadlines, acceptance checks,
how a failing sub-batch is split and retried, the wire conversions. The database and the
workers are tested for real in tests/integration/jobs/."""

from __future__ import annotations

import base64
import io

import grpc
import pytest

from ragplane.client import (
    JOB_PIECE_DOCUMENTS,
    Document,
    IngestJob,
    IngestStatus,
    _pieces,
    job_from_json,
)
from ragplane.client import JobCounts as ClientJobCounts
from ragplane.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, Unavailable
from ragplane.gateway.http import protocol as p
from ragplane.gateway.http.jobs import _document, job_object
from ragplane.gateway.http.serving import InvalidParam
from ragplane.gateway.jobs import (
    MAX_DOCUMENTS_PER_CALL,
    IngestJobs,
    JobSettings,
    _DependencyDown,
    plan_sub_batch,
    sub_batch_budget,
    validate,
)
from ragplane.gateway.jobs_store import Job, JobCounts, NewDocument, QueuedDocument
from ragplane.ops import cli, jobs_cli
from ragplane.v1 import gateway_pb2


def test_a_sub_batch_is_bounded_by_documents_and_bytes_but_never_empty() -> None:
    sizes = [(0, 10), (1, 10), (2, 10), (3, 10)]
    assert plan_sub_batch(sizes, max_documents=3, max_bytes=1000) == [0, 1, 2]
    assert plan_sub_batch(sizes, max_documents=10, max_bytes=25) == [0, 1]
    # One document over the byte limit goes alone rather than never.
    assert plan_sub_batch([(7, 5000), (8, 1)], max_documents=10, max_bytes=100) == [7]


def test_a_sub_batch_deadline_grows_with_its_work() -> None:
    settings = JobSettings()
    small = sub_batch_budget(1, 1024, settings)
    many = sub_batch_budget(32, 32 * 1024, settings)
    heavy = sub_batch_budget(1, 64 * 1024 * 1024, settings)
    assert small < many
    assert small < heavy


def test_a_job_is_refused_whole_for_a_document_no_request_may_carry() -> None:
    with pytest.raises(InvalidArgument, match="appears twice"):
        validate([NewDocument("a.md", b"x"), NewDocument("a.md", b"y")])
    with pytest.raises(InvalidArgument, match="doc_id is empty"):
        validate([NewDocument(" ", b"x")])
    with pytest.raises(InvalidArgument, match=r"\.exe"):
        validate([NewDocument("tool.exe", b"MZ")])
    with pytest.raises(InvalidArgument, match="documents is empty"):
        validate([])
    validate([], allow_empty=True)
    with pytest.raises(InvalidArgument, match="AddIngestJobDocuments"):
        validate([NewDocument(f"{i}.md", b"x") for i in range(MAX_DOCUMENTS_PER_CALL + 1)])


class _Collections:
    def name(self, given: str) -> str:
        return given or "default"


class _Indexing:
    """Fails every batch holding `slow` with DEADLINE_EXCEEDED, as a stuck stage would;
    writes the rest."""

    def __init__(self, slow: str, recover_after: int | None = None) -> None:
        self.slow = slow
        self.calls: list[list[str]] = []
        self.recover_after = recover_after

    async def ingest(self, collection, documents, until=None):
        ids = [d.doc_id for d in documents]
        self.calls.append(ids)
        slow_calls = sum(1 for c in self.calls if self.slow in c)
        if self.slow in ids and (self.recover_after is None or slow_calls <= self.recover_after):
            raise DeadlineExceeded("the embedder took too long")
        return [
            gateway_pb2.DocumentResult(
                doc_id=i, status=gateway_pb2.INGEST_STATUS_WRITTEN, chunks_written=2
            )
            for i in ids
        ]


def _queued(*doc_ids: str) -> list[QueuedDocument]:
    return [QueuedDocument(i, NewDocument(d, b"# text")) for i, d in enumerate(doc_ids)]


async def test_a_slow_stage_fails_one_document_not_the_sub_batch() -> None:
    indexing = _Indexing(slow="c.md")
    settings = JobSettings(retries=2, retry_wait_s=0.0)
    jobs = IngestJobs(None, indexing, _Collections(), settings)  # type: ignore[arg-type]
    outcomes = await jobs._ingest("docs", _queued("a.md", "b.md", "c.md", "d.md"))
    assert [(o.doc_id, o.status) for o in outcomes] == [
        ("a.md", "written"),
        ("b.md", "written"),
        ("c.md", "failed"),
        ("d.md", "written"),
    ]
    assert "took too long" in outcomes[2].error
    # The slow one alone: once split out, then each retry.
    assert indexing.calls.count(["c.md"]) == 1 + settings.retries


async def test_a_stage_that_recovers_loses_nothing() -> None:
    indexing = _Indexing(slow="b.md", recover_after=2)
    jobs = IngestJobs(None, indexing, _Collections(), JobSettings(retry_wait_s=0.0))  # type: ignore[arg-type]
    outcomes = await jobs._ingest("docs", _queued("a.md", "b.md"))
    assert [o.status for o in outcomes] == ["written", "written"]


async def test_jobs_without_a_database_say_which_variable_to_set() -> None:
    jobs = IngestJobs(None, _Indexing(slow=""), _Collections())  # type: ignore[arg-type]
    with pytest.raises(FailedPrecondition, match="RAGPLANE_GATEWAY_JOBS_DSN"):
        await jobs.create("docs", [NewDocument("a.md", b"x")])
    with pytest.raises(FailedPrecondition):
        await jobs.get("0d7c3bd4-3a43-4f0c-9a3e-2f8f0a0d4a11")


def test_http_documents_carry_text_or_base64_exactly_once() -> None:
    text = _document(p.JobDocument(doc_id="a.md", content="# hi"), "documents.0")
    assert text.content == b"# hi"
    raw = base64.b64encode(b"%PDF-1.4").decode()
    pdf = _document(p.JobDocument(doc_id="a.pdf", content_base64=raw), "documents.1")
    assert pdf.content == b"%PDF-1.4"
    with pytest.raises(InvalidParam, match="one of them"):
        _document(p.JobDocument(doc_id="a.md"), "documents.2")
    with pytest.raises(InvalidParam, match="not base64"):
        _document(p.JobDocument(doc_id="a.md", content_base64="***"), "documents.3")


def test_a_job_reads_back_the_same_through_the_http_client() -> None:
    job = Job(
        id="0d7c3bd4-3a43-4f0c-9a3e-2f8f0a0d4a11",
        tenant="",
        collection="docs",
        status="running",
        delete_missing=True,
        doc_id_prefix="",
        counts=JobCounts(total=4, pending=1, written=2, unchanged=1, deleted=1, chunks_written=9),
        error="",
        cancel_requested=False,
        created_ms=1_700_000_000_000,
        started_ms=1_700_000_001_000,
        finished_ms=0,
        attempts=2,
        lease_owner="gw-1",
    )
    wire = job_object(job).model_dump(mode="json")
    back = job_from_json(wire)
    assert back.status == "running" and not back.final
    assert back.counts.done == 3 and back.counts.deleted == 1
    assert back.attempts == 2 and back.finish_time == ""
    assert back.create_time.startswith("2023-11-14T22:13:20")


def test_the_client_sends_a_big_job_in_pieces() -> None:
    documents = [Document(f"{i}.md", b"x") for i in range(2 * JOB_PIECE_DOCUMENTS + 1)]
    pieces = list(_pieces(documents))
    assert [len(piece) for piece in pieces] == [JOB_PIECE_DOCUMENTS, JOB_PIECE_DOCUMENTS, 1]
    assert [d for piece in pieces for d in piece] == documents


def test_the_job_statuses_line_up_with_the_proto() -> None:
    assert IngestStatus.PENDING == gateway_pb2.INGEST_STATUS_PENDING
    assert IngestStatus.DELETED == gateway_pb2.INGEST_STATUS_DELETED
    assert grpc.StatusCode.FAILED_PRECONDITION == FailedPrecondition.code


def test_the_cli_parses_the_job_commands() -> None:
    args = cli.parser().parse_args(["sync", "docs/", "--collection", "c", "--delete-missing"])
    assert args.delete_missing and args.collection == "c"
    args = cli.parser().parse_args(["ingest", "--job", "a.md"])
    assert args.job
    args = cli.parser().parse_args(["jobs", "cancel", "1234"])
    assert (args.action, args.job_id) == ("cancel", "1234")


class _Down:
    async def ingest(self, collection, documents, until=None):
        raise Unavailable("the embedder is unavailable")


async def test_a_service_down_puts_the_job_back_rather_than_fail_its_documents() -> None:
    jobs = IngestJobs(None, _Down(), _Collections(), JobSettings(retries=1, retry_wait_s=0.0))  # type: ignore[arg-type]
    with pytest.raises(_DependencyDown, match="unavailable"):
        await jobs._ingest("docs", _queued("a.md", "b.md"))


class _Watched:
    """A gateway whose job makes progress in three reports."""

    async def wait_job(self, job_id, poll_s, on_progress):
        for done in (0, 10, 30):
            job = IngestJob(
                id=job_id,
                collection="docs",
                status="running" if done < 30 else "succeeded",
                counts=ClientJobCounts(total=30, written=done, chunks_written=3 * done),
            )
            on_progress(job)
        return job


async def test_the_cli_draws_a_jobs_progress_to_its_end() -> None:
    out = io.StringIO()
    job = await jobs_cli.follow(_Watched(), "job-1", out)  # type: ignore[arg-type]
    assert job.status == "succeeded"
    assert "30/30" in out.getvalue() and "90 chunks" in out.getvalue()
    assert jobs_cli.summary(job).startswith("job job-1 succeeded: 30 written")
