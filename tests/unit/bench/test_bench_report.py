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
