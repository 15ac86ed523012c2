"""A client of the gateway's public API for product backends, over gRPC or HTTP.

    async with GrpcClient("127.0.0.1:50050") as gateway:   # or HttpClient("http://...")
        async for event in gateway.ask("How do I roll back a deploy?"):
            ...                                            # Citations, Delta..., Finished

Both transports give the same typed events and raise one GatewayError, so callers import
neither grpc nor httpx. Nothing here depends on the gateway's own code.

types (the events, hits, documents, collections, jobs), errors (GatewayError), base
(GatewayClient, the default deadlines), grpc_client (GrpcClient, the proto conversions),
http_client (HttpClient, the JSON conversions), sse (the streamed answer over HTTP) and
auth (API keys, TLS files); import from ragplane.client itself.
"""

from __future__ import annotations

from ragplane.client.auth import (
    api_key_for,
    api_key_interceptors,
    api_key_metadata,
)
from ragplane.client.base import (
    ASK_TIMEOUT_S,
    DELETE_TIMEOUT_S,
    INGEST_TIMEOUT_S,
    JOB_CALL_TIMEOUT_S,
    JOB_PIECE_BYTES,
    JOB_PIECE_DOCUMENTS,
    SEARCH_TIMEOUT_S,
    GatewayClient,
)
from ragplane.client.base import _pieces as _pieces  # tests/unit/gateway/test_jobs.py
from ragplane.client.errors import (
    GRPC_CODES,
    HTTP_CODES,
    GatewayError,
    error_from_http,
    error_from_json,
    error_from_rpc,
)
from ragplane.client.grpc_client import (
    JOB_STATUS_NAMES,
    MODES,
    GrpcClient,
    citation_from_proto,
    collection_from_proto,
    document_from_proto,
    event_from_proto,
    finished_from_proto,
    hit_from_proto,
    job_from_proto,
)
from ragplane.client.http_client import (
    DEFAULT_MODEL,
    RESULT_STATUSES,
    HttpClient,
    collection_from_json,
    document_from_json,
    hit_from_json,
    job_from_json,
)
from ragplane.client.sse import (
    TIMING_KEYS,
    ChatStreamDecoder,
    SseDecoder,
    citation_from_json,
    decode_sse,
    usage_from_json,
)
from ragplane.client.types import (
    JOB_FINAL,
    AbstainReason,
    AskEvent,
    Citation,
    Citations,
    Collection,
    Delta,
    Document,
    Finished,
    FinishReason,
    Hit,
    IngestJob,
    IngestResult,
    IngestStatus,
    JobCounts,
    JobStatus,
    SearchMode,
    StoredDocument,
    Timings,
    Usage,
)

__all__ = [
    "SearchMode",
    "FinishReason",
    "AbstainReason",
    "ASK_TIMEOUT_S",
    "DEFAULT_MODEL",
    "SEARCH_TIMEOUT_S",
    "INGEST_TIMEOUT_S",
    "JOB_CALL_TIMEOUT_S",
    "JOB_PIECE_DOCUMENTS",
    "JOB_PIECE_BYTES",
    "DELETE_TIMEOUT_S",
    "MODES",
    "Citation",
    "Usage",
    "Timings",
    "Citations",
    "Delta",
    "Finished",
    "AskEvent",
    "Hit",
    "Document",
    "Collection",
    "StoredDocument",
    "IngestStatus",
    "IngestResult",
    "JobCounts",
    "JobStatus",
    "JOB_FINAL",
    "IngestJob",
    "GatewayError",
    "GatewayClient",
    "GrpcClient",
    "HttpClient",
    "event_from_proto",
    "citation_from_proto",
    "finished_from_proto",
    "collection_from_proto",
    "JOB_STATUS_NAMES",
    "RESULT_STATUSES",
    "job_from_proto",
    "job_from_json",
    "document_from_proto",
    "collection_from_json",
    "document_from_json",
    "hit_from_proto",
    "error_from_rpc",
    "GRPC_CODES",
    "HTTP_CODES",
    "error_from_http",
    "error_from_json",
    "SseDecoder",
    "ChatStreamDecoder",
    "decode_sse",
    "citation_from_json",
    "usage_from_json",
    "TIMING_KEYS",
    "hit_from_json",
    "api_key_for",
    "api_key_metadata",
    "api_key_interceptors",
]
