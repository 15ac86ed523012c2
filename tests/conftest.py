"""Shared fixtures. The integration stack starts the real services once per test session."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ragplane.channels import open_channel
from ragplane.client import api_key_interceptors
from ragplane.keys import API_KEY_ENV
from ragplane.ops import stack
from tests.support import ROOT, free_ports, shared_model_cache


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ starts real services: marked, so that
    `pytest -m "not integration"` runs the unit and deploy tests alone."""
    for item in items:
        if "integration" in item.path.relative_to(ROOT / "tests").parts[:1]:
            item.add_marker(pytest.mark.integration)


# Lines of each service's log a failing test's report shows: its errors, last first.
LOGGED_ERRORS = 20


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """A failing test that used the session's stack reports the errors its services
    logged: CI keeps the report, not the stack's logs."""
    report = yield
    layout = getattr(item, "funcargs", {}).get("running_stack")
    if report.failed and isinstance(layout, stack.StackLayout):
        for log in sorted((layout.state_dir / "logs").glob("*.log")):
            errors = _logged_errors(log)
            if errors:
                report.sections.append((f"errors in {log.name}", "\n".join(errors)))
    return report


def _logged_errors(log: Path) -> list[str]:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in reversed(lines):
        try:
            level = json.loads(line).get("level")
        except (ValueError, AttributeError):
            level = "ERROR" if "Traceback" in line or "Error" in line else None
        if level in ("ERROR", "CRITICAL"):
            found.append(line[:2000])
            if len(found) == LOGGED_ERRORS:
                break
    return found[::-1]


class SpanSink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver: keeps every exported span with its service name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []

    async def Export(self, request, context):  # noqa: N802 - gRPC method name
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="session")
async def span_sink() -> AsyncIterator[tuple[SpanSink, int]]:
    sink = SpanSink()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield sink, port
    await server.stop(0)


@pytest.fixture(scope="session")
async def running_stack(
    tmp_path_factory: pytest.TempPathFactory, span_sink: tuple[SpanSink, int]
) -> AsyncIterator[stack.StackLayout]:
    """Milvus Lite, PostgreSQL and the four services as real processes on free loopback ports,
    exporting their spans to the in-test OTLP receiver."""
    state = tmp_path_factory.mktemp("stack")
    (state / "models").symlink_to(shared_model_cache() / "models", target_is_directory=True)
    ports = free_ports(11)
    layout = stack.StackLayout(
        state_dir=state,
        ports=dict(zip(("milvus", *stack.SERVICES), ports[:5], strict=True)),
        metrics_ports=dict(zip(stack.SERVICES, ports[5:9], strict=True)),
        http_port=ports[9],
        postgres_port=ports[10],
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{span_sink[1]}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        # The causal-LM reranker is loaded but, as in the embedded default, only runs
        # when a request asks for it.
        "RAGPLANE_RERANKER": "causal-lm",
        "RAGPLANE_RERANK_BY_DEFAULT": "false",
        # The suite's stack runs SmolLM2 (fast on 2 cores; the tests' expectations were
        # measured on it); the default model's own check is test_default_model.py, which
        # runs where the stack is started with it: RAGPLANE_TEST_GENERATOR_MODEL names
        # another catalogue model for the stack (docs/models.md).
        "RAGPLANE_GENERATOR_MODEL": os.environ.get("RAGPLANE_TEST_GENERATOR_MODEL", "smollm2-135m"),
        # Authentication is on, as `ragplane up` has it; the quotas are off (the load tests
        # send 1,000 asks with one key): tests/integration/security starts a gateway with
        # them on.
        "RAGPLANE_GATEWAY_KEY_REQUESTS_PER_SECOND": "0",
        "RAGPLANE_GATEWAY_KEY_MAX_STREAMS": "0",
    }
    await stack.up(layout, env_extra=env, report=lambda _: None)
    # The admin key `up` made: every client and CLI run of the suite sends it.
    before = os.environ.get(API_KEY_ENV)
    os.environ[API_KEY_ENV] = layout.api_key() or ""
    try:
        yield layout
    finally:
        if before is None:
            os.environ.pop(API_KEY_ENV, None)
        else:
            os.environ[API_KEY_ENV] = before
        stack.down(layout, report=lambda _: None)


@pytest.fixture(scope="session")
async def channels(running_stack: stack.StackLayout) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    key = running_stack.api_key()
    assert key, "ragplane up wrote no API key"
    opened = {
        name: open_channel(
            running_stack.address(name),
            interceptors=api_key_interceptors(key) if name == "gateway" else (),
        )
        for name in stack.SERVICES
    }
    yield opened
    for channel in opened.values():
        await channel.close()
