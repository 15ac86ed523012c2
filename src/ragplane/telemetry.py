"""Tracing, metrics and logs every service shares, set up once at start-up.

Traces: OpenTelemetry, W3C trace context carried in gRPC metadata on every hop,
exported by OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set;
otherwise the API's no-op tracer is used and spans cost nothing measurable.
Metrics: prometheus_client, served on the service's own port (RAGPLANE_<SERVICE>_METRICS_ADDR).
Logs: one JSON object per line with the trace and span id.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import Counter, Histogram, disable_created_metrics, start_http_server

from ragplane.config import env_str

METRICS_PORTS = {"gateway": 9460, "embedder": 9461, "retriever": 9462, "generator": 9463}

# Latency buckets in seconds from 1 ms to 2 min: covers a cache hit and a long generation.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
)  # fmt: skip

RPC_REQUESTS = Counter(
    "ragplane_rpc_server_requests",
    "gRPC calls handled, by method and status code.",
    ["service", "method", "code"],
)
RPC_DURATION = Histogram(
    "ragplane_rpc_server_duration_seconds",
    "Time to handle a gRPC call, to the last message for streams.",
    ["service", "method"],
    buckets=LATENCY_BUCKETS,
)
CLIENT_DURATION = Histogram(
    "ragplane_rpc_client_duration_seconds",
    "Time of outgoing gRPC calls to the services behind this one.",
    ["target_service", "method", "code"],
    buckets=LATENCY_BUCKETS,
)

tracer = trace.get_tracer("ragplane")


class AccessLog:
    """The access log: a line per call, but not per refusal under overload. Past
    `refusals_per_s` refused calls in a second the rest of that second's are counted, not
    logged, and the next refusal logged says how many were left out; the request metrics
    count every one. A burst's thousand refusals would otherwise each pay for a JSON
    line, a tenth of what refusing costs (docs/reliability.md), when the gateway can
    least afford it. One event loop uses it: not thread-safe."""

    def __init__(
        self,
        logger: logging.Logger,
        refusals_per_s: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._limit = refusals_per_s
        self._clock = clock
        self._second = 0.0
        self._logged = 0  # refusals logged in the current second
        self._left_out = 0  # refusals not logged since the last one that was

    def write(self, refused: bool, message: str, *args: object) -> None:
        if refused:
            now = self._clock()
            if now - self._second >= 1.0:
                self._second, self._logged = now, 0
            if self._logged >= self._limit:
                self._left_out += 1
                return
            self._logged += 1
            if self._left_out:
                message += " (and %d refusals not logged before this one)"
                args = (*args, self._left_out)
                self._left_out = 0
        self._logger.info(message, *args)


ACCESS_LOG = AccessLog(logging.getLogger("ragplane.access"))


def setup_telemetry(service: str) -> None:
    """Logs as JSON lines, Prometheus endpoint, and an OTLP exporter when configured."""
    _setup_logging(service)
    disable_created_metrics()
    address = env_str(
        f"RAGPLANE_{service.upper()}_METRICS_ADDR", f"127.0.0.1:{METRICS_PORTS[service]}"
    )
    host, _, port = address.rpartition(":")
    if port != "0":
        start_http_server(int(port), addr=host or "0.0.0.0")
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        _setup_tracing(service)


def _setup_tracing(service: str) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"ragplane-{service}", "service.namespace": "ragplane"}
        )
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def shutdown_telemetry() -> None:
    """Flushes spans still buffered (on SIGTERM)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


# Characters str.splitlines() and other readers break lines at, besides \n and \r
# (which json.dumps escapes), as JSON escapes.
_LINE_BREAKS = {c: f"\\u{c:04x}" for c in (0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; trace_id and span_id tie a line to its request. JSON
    leaves some characters that many readers take for line breaks (U+0085, U+2028, the
    vertical tab...) unescaped: they are escaped, so a line is one line for any reader,
    whatever a request put in a logged value."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False).translate(_LINE_BREAKS)


def _setup_logging(service: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service))
    handler.formatter.converter = time.gmtime  # type: ignore[union-attr]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.getLevelName(os.environ.get("RAGPLANE_LOG_LEVEL", "INFO").upper())
    root.setLevel(level if isinstance(level, int) else logging.INFO)


@contextmanager
def server_span(method: str, metadata: Any) -> Iterator[trace.Span]:
    """The SERVER span of one incoming call, child of the caller's span if it sent one.
    With no tracer provider set (no exporter configured) it is the no-op span, without
    reading the caller's trace context: that costs about a tenth of the CPU of a refused
    call, which a burst's refusals pay a thousand times over (docs/reliability.md)."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        yield trace.INVALID_SPAN
        return
    carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
    token = otel_context.attach(propagate.extract(carrier))
    try:
        with tracer.start_as_current_span(method, kind=trace.SpanKind.SERVER) as span:
            span.set_attribute("rpc.system", "grpc")
            span.set_attribute("rpc.method", method)
            yield span
    finally:
        otel_context.detach(token)


def outgoing_metadata() -> list[tuple[str, str]]:
    """W3C trace context of the current span, for an outgoing call's metadata."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


class _ClientTelemetry:
    def __init__(self, target_service: str) -> None:
        self._target = target_service

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = list(details.metadata or []) + outgoing_metadata()
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    def _method(self, details: grpc.aio.ClientCallDetails) -> str:
        method = details.method
        return (method.decode() if isinstance(method, bytes) else method).rsplit("/", 1)[-1]


class ClientUnaryTelemetry(_ClientTelemetry, grpc.aio.UnaryUnaryClientInterceptor):
    """A CLIENT span and a latency sample per outgoing unary call; propagates the trace."""

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        method = self._method(client_call_details)
        started = time.perf_counter()
        with tracer.start_as_current_span(
            f"{self._target}/{method}", kind=trace.SpanKind.CLIENT
        ) as span:
            call = await continuation(self._details(client_call_details), request)
            code = await call.code()
            span.set_attribute("rpc.grpc.status_code", code.value[0])
        CLIENT_DURATION.labels(self._target, method, code.name).observe(
            time.perf_counter() - started
        )
        return call


class ClientStreamTelemetry(_ClientTelemetry, grpc.aio.UnaryStreamClientInterceptor):
    """Propagates the trace on outgoing server-streaming calls (the span is the caller's)."""

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


def client_interceptors(target_service: str) -> list[grpc.aio.ClientInterceptor]:
    return [ClientUnaryTelemetry(target_service), ClientStreamTelemetry(target_service)]
