"""docs/performance.md is rendered from a benchmark report: every row renders, with the
spreads where the report has them."""

from __future__ import annotations

import copy
import json

from bench.report import render
from tests.support import ROOT


def test_the_committed_report_renders_every_benchmark():
    report = json.loads((ROOT / "bench" / "results" / "latest.json").read_text())
    text = render(report)
    rows = (
        "embedder texts/s",
        "retriever dense",
        "Milvus Lite dense search",
        "generator, 16",
        "gateway's own",
        "indexing",
    )
    assert all(row in text for row in rows)
    assert f"`{report['commit']}`" in text


def test_paired_spreads_render_when_present():
    report = json.loads((ROOT / "bench" / "results" / "latest.json").read_text())
    report = copy.deepcopy(report)
    spread = {"median": 0.5, "q1": 0.25, "q3": 0.75, "runs": 3}
    report["retriever"]["modes"]["dense"]["added_ms_paired"] = spread
    report["generator"]["1_streams"]["tokens_per_second_ratio_runs"] = spread
    report["generator"]["1_streams"]["ttft_ratio_runs"] = spread
    stretches = {"median": 1.5, "q1": 1.0, "q3": 2.0, "runs": 4}
    report["indexing"]["ratio_by_stretch"] = stretches
    report["indexing"]["naive_runs"] = stretches
    text = render(report)
    assert "by stretch: 1.5 (1.0–2.0, 4 stretches), naive runs 1.5 (1.0–2.0, 4 runs)" in text
    assert "paired: +0.50 (+0.25–+0.75, 3 queries)" in text
    assert "per pair: 0.50 (0.25–0.75, 3 runs) tokens/s" in text


def test_the_pipeline_against_the_embedder_renders_when_present():
    report = copy.deepcopy(json.loads((ROOT / "bench" / "results" / "latest.json").read_text()))
    spread = {"median": 0.92, "q1": 0.9, "q3": 0.95, "runs": 3}
    report["indexing"]["vs_embedder"] = {
        "documents": 116,
        "chunks": 1146,
        "mean_tokens": 180.4,
        "baseline": {"median": 33.4, "q1": 33.0, "q3": 34.0, "runs": 3},
        "ours": {"median": 30.6, "q1": 30.0, "q3": 31.0, "runs": 3},
        "ratio": spread,
        "embedder_gflops": 105.7,
        "pipeline_gflops": 96.8,
        "matmul_peak": {"gflops": 139.8, "size": 2048, "threads": 2},
        "embedder_fraction_of_peak": 0.756,
    }
    text = render(report)
    assert "same 1146 chunks (116 documents) | embedder alone: 33.4 (33.0–34.0, 3 runs)" in text
    assert "| 0.92 (0.90–0.95, 3 runs) | >= 0.9 | yes |" in text
    assert "fp32 matmul 2048², 2 threads: 140 | embedder: 106, pipeline: 97 | 0.76 of peak" in text
