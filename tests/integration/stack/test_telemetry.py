"""Telemetry contract: real traffic through the real stack shows up as one trace per
request across every service, in a real Prometheus, and in every dashboard panel."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from ragplane.ops import stack
from ragplane.v1 import gateway_pb2, gateway_pb2_grpc
from tests.support import free_port
from tools import dashboards

T = 120
SERVICES = {f"ragplane-{name}" for name in stack.SERVICES}
DOCUMENT = b"""# Telemetry handbook

## Rotation

The telemetry on-call rotation hands over every Thursday at 09:00 UTC.
"""


@pytest.fixture(scope="module")
async def traffic(channels) -> dict[str, str]:
    """One ingest, one answered and one abstained question; returns the answer."""
    gateway = gateway_pb2_grpc.GatewayServiceStub(channels["gateway"])
    await gateway.Ingest(
        gateway_pb2.IngestRequest(
            collection="telemetry",
            documents=[gateway_pb2.Document(doc_id="t.md", source="t.md", content=DOCUMENT)],
        ),
        timeout=T,
    )
    answers = {}
    for question in ("When does the telemetry rotation hand over?", "What is the price of tea?"):
        reply = await gateway.AskUnary(
            gateway_pb2.AskUnaryRequest(
                request=gateway_pb2.AskRequest(collection="telemetry", question=question)
            ),
            timeout=T,
        )
        answers[question] = reply.answer
    return answers


@pytest.fixture(scope="module")
async def prometheus(running_stack, tmp_path_factory, traffic) -> str:
    """Debian's Prometheus on loopback scraping every service each second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: .ci/run installs Debian's prometheus package")
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": f"ragplane-{name}",
                "static_configs": [{"targets": [f"127.0.0.1:{running_stack.metrics_ports[name]}"]}],
            }
            for name in stack.SERVICES
        ],
    }
    (folder / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    proc = start_prometheus(binary, folder, port)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    up = await query(client, 'up{job=~"ragplane-.+"} == 1')
                    if len(up) == len(SERVICES):
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, (folder / "prometheus.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "Prometheus did not scrape every service"
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)  # a few scrapes after the traffic
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def start_prometheus(binary: str, folder, port: int) -> subprocess.Popen:
    with (folder / "prometheus.log").open("wb") as log:
        return subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def query(client: httpx.AsyncClient, promql: str) -> list[dict]:
    reply = await client.get("/api/v1/query", params={"query": promql})
    reply.raise_for_status()
    return reply.json()["data"]["result"]


async def spans_of_trace(
    span_sink, root_name: str, want: set[str], named: frozenset[tuple[str, str]] = frozenset()
):
    """The newest trace rooted at root_name whose spans come from all `want` services and
    include every (service, span name) in `named`: a streaming call's server span is
    exported after the unary calls' spans of the same service, so services alone are not
    enough to know the trace is complete."""
    sink, _ = span_sink
    for _ in range(100):
        roots = [s for svc, s in sink.spans if s.name == root_name and not s.parent_span_id]
        for root in sorted(roots, key=lambda s: s.start_time_unix_nano, reverse=True):
            spans = [(svc, s) for svc, s in sink.spans if s.trace_id == root.trace_id]
            if want <= {svc for svc, _ in spans} and named <= {(v, x.name) for v, x in spans}:
                return root.trace_id, spans
        await asyncio.sleep(0.1)
    seen = {(svc, s.name) for svc, s in sink.spans}
    pytest.fail(
        f"no complete trace for {root_name}: services {sorted(want)}, spans missing from "
        f"every trace: {sorted(named - seen)}; spans seen: {sorted(seen)}"
    )


def trace_tree(spans) -> str:
    """The trace as indented text: service, span, duration."""
    children: dict[bytes, list] = {}
    for svc, span in spans:
        children.setdefault(span.parent_span_id, []).append((svc, span))
    lines: list[str] = []

    def walk(parent: bytes, depth: int) -> None:
        for svc, span in sorted(children.get(parent, []), key=lambda x: x[1].start_time_unix_nano):
            ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
            lines.append(f"{svc:<20}{'  ' * depth}{span.name}  {ms:.1f} ms")
            walk(span.span_id, depth + 1)

    walk(b"", 0)
    return "\n".join(lines) + "\n"


ASK_SPANS = (
    ("ragplane-gateway", "embed"),
    ("ragplane-gateway", "retrieve"),
    ("ragplane-gateway", "prompt"),
    ("ragplane-gateway", "generate"),
    ("ragplane-embedder", "ragplane.v1.EmbedderService/Embed"),
    ("ragplane-embedder", "embed batch"),
    ("ragplane-retriever", "ragplane.v1.RetrieverService/Search"),
    ("ragplane-generator", "ragplane.v1.GeneratorService/Generate"),
    ("ragplane-generator", "generate"),
)


async def test_an_ask_is_one_trace_across_every_service(traffic, span_sink):
    # Waits (up to 10 s) for a trace with every span an Ask makes; fails naming what is not.
    trace_id, spans = await spans_of_trace(
        span_sink, "ragplane.v1.GatewayService/AskUnary", SERVICES, frozenset(ASK_SPANS)
    )
    ids = {s.span_id for _, s in spans}
    orphans = [s.name for _, s in spans if s.parent_span_id and s.parent_span_id not in ids]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"
    # An answered question is four calls behind the gateway, no lookups or metadata.
    rpcs = sorted(
        s.name
        for svc, s in spans
        if svc != "ragplane-gateway" and s.name.startswith("ragplane.v1.")
    )
    assert rpcs == [
        "ragplane.v1.EmbedderService/Embed",
        "ragplane.v1.GeneratorService/CountPromptTokens",
        "ragplane.v1.GeneratorService/Generate",
        "ragplane.v1.RetrieverService/Search",
    ], trace_tree(spans)
    if dump := os.environ.get("RAGPLANE_TRACE_DUMP"):  # docs/observability.md shows one
        await asyncio.to_thread(Path(dump).write_text, trace_tree(spans))
    generation = next(s for svc, s in spans if svc == "ragplane-generator" and s.name == "generate")
    attributes = {a.key: a.value for a in generation.attributes}
    assert attributes["ragplane.completion_tokens"].int_value > 0
    assert attributes["ragplane.time_to_first_token_ms"].double_value > 0


async def test_an_ingest_is_one_trace_through_chunking_embedding_and_upsert(traffic, span_sink):
    want = {"ragplane-gateway", "ragplane-embedder", "ragplane-retriever"}
    _, spans = await spans_of_trace(span_sink, "ragplane.v1.GatewayService/Ingest", want)
    names = {(svc, s.name) for svc, s in spans}
    assert ("ragplane-gateway", "chunk") in names
    assert ("ragplane-gateway", "embed chunks") in names
    assert ("ragplane-embedder", "ragplane.v1.EmbedderService/Tokenize") in names
    assert ("ragplane-retriever", "ragplane.v1.RetrieverService/Upsert") in names


async def test_log_lines_carry_the_trace_id(traffic, span_sink, running_stack):
    trace_id, _ = await spans_of_trace(span_sink, "ragplane.v1.GatewayService/AskUnary", SERVICES)
    hex_id = trace_id.hex()
    for service in stack.SERVICES:
        lines = [
            json.loads(line)
            for line in running_stack.log_file(service).read_text().splitlines()
            if line.startswith("{")
        ]
        assert any(entry.get("trace_id") == hex_id for entry in lines), service


async def test_prometheus_scrapes_every_service_with_live_series(prometheus):
    async with httpx.AsyncClient(base_url=prometheus, timeout=5) as client:
        calls = await query(client, "sum by (service) (ragplane_rpc_server_requests_total) > 0")
        assert {r["metric"]["service"] for r in calls} == set(stack.SERVICES)
        for promql in [
            "ragplane_embedder_texts_total",
            "ragplane_embedder_batch_size_count",
            "ragplane_retriever_search_duration_seconds_count",
            "ragplane_generator_completion_tokens_total",
            "ragplane_generator_time_to_first_token_seconds_count",
            '{__name__=~"vllm[:_]generation_tokens_total"}',
            'ragplane_gateway_answers_total{outcome="answered"}',
            'ragplane_gateway_answers_total{outcome="abstained"}',
            "ragplane_gateway_chunks_written_total",
            'ragplane_rpc_client_duration_seconds_count{target_service="embedder"}',
        ]:
            result = await query(client, f"sum({promql})")
            assert result and float(result[0]["value"][1]) > 0, promql


async def test_every_dashboard_query_names_metrics_that_exist(prometheus):
    async with httpx.AsyncClient(base_url=prometheus, timeout=5) as client:
        reply = await client.get("/api/v1/label/__name__/values")
        exported = set(reply.json()["data"])
    missing = {}
    for name, build in dashboards.DASHBOARDS.items():
        for panel in build()["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                names = re.findall(r"\b(ragplane_[a-z0-9_]+)", expr)
                patterns = re.findall(r'__name__=~"([^"]+)"', expr)
                for metric in names:
                    if metric not in exported:
                        missing.setdefault(f"{name}: {panel['title']}", set()).add(metric)
                for pattern in patterns:
                    if not any(re.fullmatch(pattern, m) for m in exported):
                        missing.setdefault(f"{name}: {panel['title']}", set()).add(pattern)
    assert not missing


def test_dashboard_files_are_up_to_date():
    for name, text in dashboards.render().items():
        assert (dashboards.OUT / name).read_text() == text, (
            f"run python -m tools.dashboards ({name})"
        )
