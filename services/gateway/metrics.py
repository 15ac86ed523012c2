"""The gateway's instruments, created in one place."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ragplane.telemetry import LATENCY_BUCKETS

ASK_DURATION = Histogram(
    "ragplane_gateway_ask_duration_seconds",
    "End-to-end time of an Ask, from request to the last answer token.",
    buckets=LATENCY_BUCKETS,
)
ASK_TIME_TO_FIRST_TOKEN = Histogram(
    "ragplane_gateway_ask_time_to_first_token_seconds",
    "Time from an Ask request to the first answer text sent to the caller.",
    buckets=LATENCY_BUCKETS,
)
ASK_STAGE_DURATION = Histogram(
    "ragplane_gateway_stage_duration_seconds",
    "Time of each query stage: embed, retrieve, prompt, generate.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
ANSWERS = Counter(
    "ragplane_gateway_answers",
    "Answers sent, by outcome: answered, or abstained ('I don't know' without generation).",
    ["outcome"],
)
CITATIONS_PER_ANSWER = Histogram(
    "ragplane_gateway_citations_per_answer",
    "Chunks given to the model as context per answered question.",
    buckets=(0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50),
)
DOCUMENTS_INGESTED = Counter(
    "ragplane_gateway_documents_ingested",
    "Documents handled by Ingest, by status: written, unchanged, failed.",
    ["status"],
)
CHUNKS_INGESTED = Counter(
    "ragplane_gateway_chunks_written",
    "Chunks written to the retriever by Ingest.",
)
HTTP_REQUESTS = Counter(
    "ragplane_http_requests",
    "HTTP API requests, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "ragplane_http_request_duration_seconds",
    "Time to handle an HTTP API request, to the last byte of a streamed answer.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
ASKS_IN_FLIGHT = Gauge(
    "ragplane_gateway_asks_in_flight",
    "Asks being worked on (admitted, not yet finished).",
)
ASKS_IN_FLIGHT_LIMIT = Gauge(
    "ragplane_gateway_asks_in_flight_limit",
    "Asks worked on at once (RAGPLANE_GATEWAY_MAX_ASKS_IN_FLIGHT); more wait in the queue.",
)
ASKS_QUEUED = Gauge(
    "ragplane_gateway_asks_queued",
    "Asks waiting for a slot, all tenants together.",
)
ASKS_QUEUE_LIMIT = Gauge(
    "ragplane_gateway_asks_queue_limit",
    "Asks that may wait (RAGPLANE_GATEWAY_MAX_QUEUED_ASKS); more are refused at once.",
)
ASKS_REFUSED = Counter(
    "ragplane_gateway_asks_refused",
    "Asks refused by admission control before any work, by reason: queue_full, or "
    "deadline (the queue ahead would outlast the caller's deadline).",
    ["reason"],
)
ASK_QUEUE_WAIT = Histogram(
    "ragplane_gateway_ask_queue_wait_seconds",
    "Time an admitted Ask waited for its slot.",
    buckets=LATENCY_BUCKETS,
)
ASK_SERVICE_ESTIMATE = Gauge(
    "ragplane_gateway_ask_service_seconds_estimate",
    "Admission control's estimate of one Ask's service time (EWMA of recent asks).",
)
# Both reasons exported from the start, at 0: dashboards and alerts see the series.
for _reason in ("queue_full", "deadline"):
    ASKS_REFUSED.labels(_reason)
BREAKER_STATE = Gauge(
    "ragplane_gateway_breaker_state",
    "Circuit breaker per service behind the gateway: 0 closed, 1 half-open, 2 open "
    "(calls refused at once with UNAVAILABLE).",
    ["backend"],
)
BREAKER_OPENED = Counter(
    "ragplane_gateway_breaker_opened",
    "Times a service's circuit breaker opened.",
    ["backend"],
)
# Per-tenant series, their tenant label bounded (tenant_label).
TENANT_REQUESTS = Counter(
    "ragplane_gateway_tenant_requests",
    "Public API calls admitted (key valid, role enough, within rate), by tenant.",
    ["tenant"],
)
QUOTA_REFUSALS = Counter(
    "ragplane_gateway_quota_refusals",
    "Calls refused with RESOURCE_EXHAUSTED by a quota, by tenant and quota: rate "
    "(per-key requests a second), streams (per-key concurrent streams), storage "
    "(per-tenant chunks).",
    ["tenant", "quota"],
)
AUTH_REFUSALS = Counter(
    "ragplane_gateway_auth_refusals",
    "Calls refused before any work, by reason: missing (no key), invalid (unknown, "
    "malformed or revoked key), role (PERMISSION_DENIED).",
    ["reason"],
)
for _reason in ("missing", "invalid", "role"):
    AUTH_REFUSALS.labels(_reason)
# Exported from the start, at 0, under the shared label: dashboards see the series.
for _quota in ("rate", "streams", "storage"):
    QUOTA_REFUSALS.labels("other", _quota)
# The first MAX_TENANT_LABELS tenants seen get their own label value, the rest share
# "other": a gateway with thousands of tenants keeps a bounded number of series.
MAX_TENANT_LABELS = 50
OTHER_TENANTS = "other"
_tenant_labels: set[str] = set()


def tenant_label(tenant: str) -> str:
    """The tenant's value for a `tenant` label (bounded cardinality)."""
    if tenant in _tenant_labels:
        return tenant
    if len(_tenant_labels) < MAX_TENANT_LABELS:
        _tenant_labels.add(tenant)
        return tenant
    return OTHER_TENANTS
