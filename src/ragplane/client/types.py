"""What the gateway gives and takes, the same on both transports: the events of an
answer, search hits, documents, collections and ingestion jobs. Frozen dataclasses that
know neither gRPC nor HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

from ragplane.v1 import gateway_pb2

SearchMode = Literal["dense", "keyword", "hybrid"]
FinishReason = Literal["stop", "length"]
# Why the gateway answered "I don't know": "no_hits", "low_relevance" or "unknown_names".
AbstainReason = str


@dataclass(frozen=True)
class Citation:
    """A chunk the model was given, numbered as the answer cites it: [index]."""

    index: int
    doc_id: str
    title: str = ""
    source: str = ""
    section: str = ""
    chunk_id: str = ""
    score: float = 0.0
    collection: str = ""
    text: str = ""
    relevance: float = 0.0


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Timings:
    """Where the gateway spent an answer's time, in milliseconds."""

    embed_ms: float = 0.0
    retrieve_ms: float = 0.0
    rerank_ms: float = 0.0
    prompt_ms: float = 0.0
    time_to_first_token_ms: float = 0.0
    generate_ms: float = 0.0
    total_ms: float = 0.0


# The events of an answer, in order: Citations once, Delta any number of times, Finished.


@dataclass(frozen=True)
class Citations:
    citations: list[Citation]


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: FinishReason
    usage: Usage = field(default_factory=Usage)
    abstained: bool = False
    abstain_reason: AbstainReason | None = None
    timings: Timings = field(default_factory=Timings)
    # The question's names the corpus does not know (abstain_reason "unknown_names").
    unknown_names: tuple[str, ...] = ()

    @property
    def cut(self) -> bool:
        """True when the answer stopped at max_tokens."""
        return self.finish_reason == "length"


AskEvent = Citations | Delta | Finished


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk, in the gateway's final order."""

    chunk_id: str
    doc_id: str
    title: str
    source: str
    section: str
    text: str
    collection: str
    score: float
    # Query-chunk cosine whatever the mode: one scale to judge relevance by.
    relevance: float
    position: int = 0
    tags: tuple[str, ...] = ()
    # The reranker's score when the hits were reranked.
    rerank_score: float | None = None


@dataclass(frozen=True)
class Document:
    """A document to index; re-ingesting the same doc_id replaces it."""

    doc_id: str
    content: bytes | str
    source: str = ""
    title: str = ""
    # "text/markdown", "text/html", "text/plain", "application/pdf", the DOCX or PPTX
    # type; guessed from source when empty. Any other is refused.
    media_type: str = ""
    tags: tuple[str, ...] = ()
    # Shown with the document (owner, url, ...); not searched.
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Collection:
    """A collection: its embedding model, description and sizes."""

    name: str
    embedding_model: str
    dimension: int
    chunk_count: int
    document_count: int
    description: str = ""


@dataclass(frozen=True)
class StoredDocument:
    """A document as a collection holds it."""

    doc_id: str
    title: str
    source: str
    doc_hash: str
    chunk_count: int
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


class IngestStatus(IntEnum):
    """Numbered as ragplane.v1.IngestStatus, so the two compare equal."""

    WRITTEN = gateway_pb2.INGEST_STATUS_WRITTEN
    UNCHANGED = gateway_pb2.INGEST_STATUS_UNCHANGED
    FAILED = gateway_pb2.INGEST_STATUS_FAILED
    # A job's document not indexed yet; one a sync deleted (gone from the source).
    PENDING = gateway_pb2.INGEST_STATUS_PENDING
    DELETED = gateway_pb2.INGEST_STATUS_DELETED


@dataclass(frozen=True)
class IngestResult:
    doc_id: str
    status: IngestStatus
    chunks_written: int = 0
    chunks_deleted: int = 0
    error: str = ""


@dataclass(frozen=True)
class JobCounts:
    """A job's documents by outcome; `deleted`: a sync's deletions, not in `total`."""

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
        return self.written + self.unchanged + self.failed


# A job's status: receiving, queued, running, succeeded, failed or cancelled.
JobStatus = str
JOB_FINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class IngestJob:
    """An ingestion job as any gateway replica reports it; times are RFC 3339 ("": not
    yet). `documents`: a page of outcomes (job() only)."""

    id: str
    collection: str
    status: JobStatus
    counts: JobCounts = field(default_factory=JobCounts)
    error: str = ""
    delete_missing: bool = False
    doc_id_prefix: str = ""
    cancel_requested: bool = False
    attempts: int = 0
    create_time: str = ""
    start_time: str = ""
    finish_time: str = ""
    documents: tuple[IngestResult, ...] = ()
    next_page_token: str = ""

    @property
    def final(self) -> bool:
        return self.status in JOB_FINAL
