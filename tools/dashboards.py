"""Grafana dashboards, generated so every panel follows the same conventions
(`python -m tools.dashboards` writes charts/ragplane/files/grafana/*.json; a test
fails when the files are stale, another that a panel queries a metric nobody exports)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "charts" / "ragplane" / "files" / "grafana"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


def vllm(name: str) -> str:
    """A vLLM engine metric by either spelling: `vllm:x` in Prometheus' text format,
    `vllm_x` when the scrape negotiates OpenMetrics (prometheus_client escapes the colon)."""
    return f'{{__name__=~"vllm[:_]{name}"}}'


def rate(metric: str, selector: str = "") -> str:
    return f"rate({metric}{selector}[{RATE}])"


def quantile(q: float, metric: str, by: str = "", where: str = "") -> str:
    group = f"le{', ' + by if by else ''}"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{where}[{RATE}])))"


def panel(
    title: str, unit: str, *targets: tuple[str, str], description: str = ""
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(65 + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    for i, p in enumerate(panels):
        p["id"] = i + 1
        p["gridPos"] = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)}
    return {
        "uid": uid,
        "title": title,
        "tags": ["ragplane"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "panels": panels,
    }


SERVER_ERRORS = (
    'code=~"INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED|UNKNOWN|DATA_LOSS"'
)


def golden_signals(service: str) -> list[dict[str, Any]]:
    where = f'{{service="{service}"}}'
    return [
        panel(
            "Requests by method",
            "reqps",
            (
                f"sum by (method) (rate(ragplane_rpc_server_requests_total{where}[{RATE}]))",
                "{{method}}",
            ),
        ),
        panel(
            "Errors by status",
            "reqps",
            (
                "sum by (code) ("
                + rate("ragplane_rpc_server_requests_total", f'{{service="{service}", code!="OK"}}')
                + ")",
                "{{code}}",
            ),
        ),
        panel(
            "Latency p50 / p99 by method",
            "s",
            (
                quantile(0.5, "ragplane_rpc_server_duration_seconds", "method", where),
                "p50 {{method}}",
            ),
            (
                quantile(0.99, "ragplane_rpc_server_duration_seconds", "method", where),
                "p99 {{method}}",
            ),
        ),
    ]


def overview() -> dict[str, Any]:
    return dashboard(
        "ragplane-overview",
        "ragplane / overview",
        [
            panel(
                "Requests per service",
                "reqps",
                (
                    f"sum by (service) (rate(ragplane_rpc_server_requests_total[{RATE}]))",
                    "{{service}}",
                ),
            ),
            panel(
                "Server error ratio per service",
                "percentunit",
                (
                    "sum by (service) ("
                    + rate("ragplane_rpc_server_requests_total", f"{{{SERVER_ERRORS}}}")
                    + ") / sum by (service) ("
                    + rate("ragplane_rpc_server_requests_total")
                    + ")",
                    "{{service}}",
                ),
            ),
            panel(
                "Ask end-to-end latency",
                "s",
                *[
                    (quantile(q, "ragplane_gateway_ask_duration_seconds"), f"p{int(q * 100)}")
                    for q in (0.5, 0.95, 0.99)
                ],
            ),
            panel(
                "Ask time to first token",
                "s",
                *[
                    (
                        quantile(q, "ragplane_gateway_ask_time_to_first_token_seconds"),
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                ],
            ),
            panel(
                "p99 latency per service",
                "s",
                (quantile(0.99, "ragplane_rpc_server_duration_seconds", "service"), "{{service}}"),
            ),
            panel(
                "Saturation",
                "percentunit",
                (
                    "max(ragplane_embedder_queue_texts / ragplane_embedder_queue_limit_texts)",
                    "embedder queue",
                ),
                (
                    "max(ragplane_generator_queued_requests / ragplane_generator_queue_limit)",
                    "generator queue",
                ),
                (
                    "max(ragplane_gateway_asks_queued / ragplane_gateway_asks_queue_limit)",
                    "gateway ask queue",
                ),
            ),
            panel(
                "Asks refused by admission control",
                "reqps",
                (
                    f"sum by (reason) (rate(ragplane_gateway_asks_refused_total[{RATE}]))",
                    "{{reason}}",
                ),
                description="Refused at once, before any work, with a retry hint: the "
                "queue was full, or the queue ahead would outlast the caller's deadline.",
            ),
            panel(
                "Circuit breakers open",
                "short",
                (
                    "max by (backend) (ragplane_gateway_breaker_state == bool 2)",
                    "{{backend}}",
                ),
                description="1 while the gateway refuses calls to a service it found "
                "down (UNAVAILABLE at once; the gateway's health is NOT_SERVING).",
            ),
            panel(
                "Answers and abstentions",
                "reqps",
                (f"sum by (outcome) (rate(ragplane_gateway_answers_total[{RATE}]))", "{{outcome}}"),
            ),
            panel(
                "Scrape targets up",
                "short",
                ('sum by (job) (up{job=~"ragplane-.+"})', "{{job}}"),
            ),
        ],
    )


def gateway() -> dict[str, Any]:
    return dashboard(
        "ragplane-gateway",
        "ragplane / gateway",
        golden_signals("gateway")
        + [
            panel(
                "Query stage latency p99",
                "s",
                (quantile(0.99, "ragplane_gateway_stage_duration_seconds", "stage"), "{{stage}}"),
            ),
            panel(
                "Citations per answer (mean)",
                "short",
                (
                    f"sum(rate(ragplane_gateway_citations_per_answer_sum[{RATE}]))"
                    f" / sum(rate(ragplane_gateway_citations_per_answer_count[{RATE}]))",
                    "citations",
                ),
            ),
            panel(
                '"I don\'t know" rate',
                "percentunit",
                (
                    f'sum(rate(ragplane_gateway_answers_total{{outcome="abstained"}}[{RATE}]))'
                    f" / sum(rate(ragplane_gateway_answers_total[{RATE}]))",
                    "abstained",
                ),
            ),
            panel(
                "Ingestion",
                "short",
                (
                    f"sum by (status) (rate(ragplane_gateway_documents_ingested_total[{RATE}]))",
                    "documents {{status}}/s",
                ),
                (f"sum(rate(ragplane_gateway_chunks_written_total[{RATE}]))", "chunks/s"),
            ),
            panel(
                "Admission: asks in flight and queued",
                "short",
                ("sum(ragplane_gateway_asks_in_flight)", "in flight"),
                ("sum(ragplane_gateway_asks_in_flight_limit)", "in-flight limit"),
                ("sum(ragplane_gateway_asks_queued)", "queued"),
                ("sum(ragplane_gateway_asks_queue_limit)", "queue limit"),
            ),
            panel(
                "Admission: refusals and queue wait",
                "short",
                (
                    f"sum by (reason) (rate(ragplane_gateway_asks_refused_total[{RATE}]))",
                    "refused/s ({{reason}})",
                ),
                (quantile(0.5, "ragplane_gateway_ask_queue_wait_seconds"), "wait p50 (s)"),
                (quantile(0.99, "ragplane_gateway_ask_queue_wait_seconds"), "wait p99 (s)"),
                (
                    "max(ragplane_gateway_ask_service_seconds_estimate)",
                    "service time estimate (s)",
                ),
            ),
            panel(
                "Requests by tenant",
                "reqps",
                (
                    f"sum by (tenant) (rate(ragplane_gateway_tenant_requests_total[{RATE}]))",
                    "{{tenant}}",
                ),
                description="Admitted public calls; the first 50 tenants a replica sees have "
                "their own series, the rest are 'other'.",
            ),
            panel(
                "Quota and auth refusals",
                "short",
                (
                    f"sum by (tenant, quota) (rate(ragplane_gateway_quota_refusals_total[{RATE}]))",
                    "{{tenant}} {{quota}}/s",
                ),
                (
                    f"sum by (reason) (rate(ragplane_gateway_auth_refusals_total[{RATE}]))",
                    "auth refused/s ({{reason}})",
                ),
                description="RESOURCE_EXHAUSTED by quota (rate, streams, storage) and "
                "UNAUTHENTICATED / PERMISSION_DENIED by reason (missing, invalid, role).",
            ),
            panel(
                "Circuit breaker state",
                "short",
                ("max by (backend) (ragplane_gateway_breaker_state)", "{{backend}}"),
                (
                    f"sum by (backend) (increase(ragplane_gateway_breaker_opened_total[{RATE}]))",
                    "opened ({{backend}})",
                ),
                description="0 closed, 1 half-open (one trial call), 2 open (refused at once).",
            ),
            panel(
                "Calls to the services behind, p99",
                "s",
                (
                    quantile(
                        0.99, "ragplane_rpc_client_duration_seconds", "target_service, method"
                    ),
                    "{{target_service}} {{method}}",
                ),
            ),
        ],
    )


def embedder() -> dict[str, Any]:
    return dashboard(
        "ragplane-embedder",
        "ragplane / embedder",
        golden_signals("embedder")
        + [
            panel(
                "Batch size (texts per forward pass)",
                "short",
                (quantile(0.5, "ragplane_embedder_batch_size"), "p50"),
                (
                    f"sum(rate(ragplane_embedder_batch_size_sum[{RATE}]))"
                    f" / sum(rate(ragplane_embedder_batch_size_count[{RATE}]))",
                    "mean",
                ),
            ),
            panel(
                "Throughput",
                "short",
                (f"sum(rate(ragplane_embedder_texts_total[{RATE}]))", "texts/s"),
                (f"sum(rate(ragplane_embedder_tokens_total[{RATE}]))", "tokens/s"),
            ),
            panel(
                "Queue",
                "short",
                ("sum(ragplane_embedder_queue_texts)", "texts waiting"),
                (f"sum(rate(ragplane_embedder_rejected_requests_total[{RATE}]))", "rejected/s"),
            ),
            panel(
                "Queue wait and batch time p99",
                "s",
                (quantile(0.99, "ragplane_embedder_queue_wait_seconds"), "queue wait"),
                (quantile(0.99, "ragplane_embedder_batch_duration_seconds"), "batch"),
            ),
        ],
    )


def retriever() -> dict[str, Any]:
    return dashboard(
        "ragplane-retriever",
        "ragplane / retriever",
        golden_signals("retriever")
        + [
            panel(
                "Search latency p99 by mode",
                "s",
                (quantile(0.99, "ragplane_retriever_search_duration_seconds", "mode"), "{{mode}}"),
            ),
            panel(
                "Candidates returned per search (mean)",
                "short",
                (
                    f"sum(rate(ragplane_retriever_search_hits_sum[{RATE}]))"
                    f" / sum(rate(ragplane_retriever_search_hits_count[{RATE}]))",
                    "hits",
                ),
            ),
            panel(
                "Chunks written and deleted",
                "short",
                (f"sum(rate(ragplane_retriever_chunks_written_total[{RATE}]))", "written/s"),
                (f"sum(rate(ragplane_retriever_chunks_deleted_total[{RATE}]))", "deleted/s"),
            ),
        ],
    )


def generator() -> dict[str, Any]:
    return dashboard(
        "ragplane-generator",
        "ragplane / generator",
        golden_signals("generator")
        + [
            panel(
                "Time to first token",
                "s",
                (quantile(0.5, "ragplane_generator_time_to_first_token_seconds"), "p50"),
                (quantile(0.99, "ragplane_generator_time_to_first_token_seconds"), "p99"),
            ),
            panel(
                "Inter-token latency",
                "s",
                (quantile(0.5, "ragplane_generator_inter_token_latency_seconds"), "p50"),
                (quantile(0.99, "ragplane_generator_inter_token_latency_seconds"), "p99"),
            ),
            panel(
                "Tokens",
                "short",
                (f"sum(rate(ragplane_generator_prompt_tokens_total[{RATE}]))", "prompt tokens/s"),
                (
                    f"sum(rate(ragplane_generator_completion_tokens_total[{RATE}]))",
                    "completion tokens/s",
                ),
            ),
            panel(
                "Requests in flight",
                "short",
                ("sum(ragplane_generator_running_requests)", "ragplane running"),
                ("sum(ragplane_generator_queued_requests)", "ragplane queued"),
                (f"sum({vllm('num_requests_running')})", "vLLM running"),
                (f"sum({vllm('num_requests_waiting')})", "vLLM waiting"),
            ),
            panel(
                "vLLM KV cache usage",
                "percentunit",
                (f"max({vllm('kv_cache_usage_perc')})", "KV cache"),
            ),
        ],
    )


DASHBOARDS = {
    "overview.json": overview,
    "gateway.json": gateway,
    "embedder.json": embedder,
    "retriever.json": retriever,
    "generator.json": generator,
}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)


if __name__ == "__main__":
    main()
