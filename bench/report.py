# ruff: noqa: E501 - one table row per f-string reads better than wrapped fragments
"""Renders a benchmark report (bench/results/*.json) as docs/performance.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.harness import ROOT


def _spread(s: dict[str, float], fmt: str = "{:.2f}", unit: str = "runs") -> str:
    return f"{fmt.format(s['median'])} ({fmt.format(s['q1'])}–{fmt.format(s['q3'])}, {s['runs']} {unit})"


def render(r: dict[str, Any]) -> str:
    lines = [
        "# Performance",
        "",
        "Every number is a ratio against a baseline measured side by side in the same run on",
        "the same machine (baseline and ours alternate, so drift hits both), by `make bench`",
        "(`python -m bench.run`; `--smoke` is the seconds-long variant the test suite runs).",
        "Medians, with the interquartile range in brackets where runs repeat.",
        "",
        f"Last run on commit `{r['commit']}`, {r['date']}, {r['machine']}, no GPU; report",
        "`bench/results/latest.json`. `--only` reruns some benchmarks and keeps the others'",
        "results; the last column says which commit each row was measured on.",
        "",
        "| what | baseline | ragplane | ratio / overhead | target | met | commit |",
        "|---|---|---|---|---|---|---|",
    ]

    def at(section: dict[str, Any]) -> str:
        return f" {section.get('commit', r['commit'])} |"

    e = r.get("embedder")
    if e:
        lines.append(
            f"| embedder texts/s, {e['clients']} concurrent clients x {e['texts_per_request']} texts "
            f"| in-process `encode`: {_spread(e['baseline'], '{:.0f}')} "
            f"| service: {_spread(e['ours'], '{:.0f}')} | {_spread(e['ratio'])} | >= 0.95 "
            f"| {'yes' if e['ratio']['median'] >= 0.95 else 'no'} |" + at(e)
        )
        inf = e.get("vs_infinity")
        if isinstance(inf, dict):
            lines.append(
                f"| embedder texts/s vs Infinity, same clients and requests "
                f"| Infinity: {_spread(inf['baseline'], '{:.0f}')} "
                f"| service: {_spread(inf['ours'], '{:.0f}')} | {_spread(inf['ratio'])} | > 1 "
                f"| {'yes' if inf['ratio']['median'] > 1 else 'no'} |" + at(e)
            )
    ret = r.get("retriever")
    if ret:
        for mode, m in ret["modes"].items():
            # The paired median where the report has it, else the difference of p50s.
            added = m.get("added_ms_paired", {}).get("median", m["added_p50_ms"])
            lines.append(
                f"| retriever {mode} search p50 / p99 (ms) | pymilvus: {m['direct_p50_ms']:.2f} / "
                f"{m['direct_p99_ms']:.2f} | service: {m['service_p50_ms']:.2f} / "
                f"{m['service_p99_ms']:.2f} | {m['added_p50_ms']:+.2f} ms at p50"
                + (
                    f"; paired: {_spread(m['added_ms_paired'], '{:+.2f}', 'queries')}"
                    if "added_ms_paired" in m
                    else ""
                )
                + " | < 1 ms "
                f"| {'yes' if added < 1 else 'no'} |" + at(ret)
            )
    fl = r.get("flush")
    if fl:
        lines.append(
            f"| Milvus Lite dense search (ms), {fl['rows']} rows, flushed vs not "
            f"| unflushed: {_spread(fl['baseline'], '{:.1f}', 'queries')} "
            f"| flushed, as the retriever leaves them: {_spread(fl['ours'], '{:.1f}', 'queries')} "
            f"| {_spread(fl['ratio'], '{:.3f}', 'queries')} | < 1 "
            f"| {'yes' if fl['ratio']['median'] < 1 else 'no'} |" + at(fl)
        )
    g = r.get("generator")
    if g and "1_streams" in g:
        for count in ("1", "16"):
            x = g[f"{count}_streams"]
            tok, ttft = x["tokens_per_second_ratio"], x["ttft_ratio"]
            lines.append(
                f"| generator, {count} stream(s): tokens/s, TTFT (ms) | vLLM OpenAI server: "
                f"{x['vllm_openai']['tokens_per_second']:.0f}, {x['vllm_openai']['ttft_ms_p50']:.0f} "
                f"| service: {x['service']['tokens_per_second']:.0f}, {x['service']['ttft_ms_p50']:.0f} "
                f"| {tok:.2f}x tokens/s, {ttft:.2f}x TTFT"
                + (
                    f"; per pair: {_spread(x['tokens_per_second_ratio_runs'])} tokens/s, "
                    f"{_spread(x['ttft_ratio_runs'])} TTFT"
                    if "ttft_ratio_runs" in x
                    else ""
                )
                + " | within 5 % "
                f"| {'yes' if tok >= 0.95 and ttft <= 1.05 else 'no'} |" + at(g)
            )
    gw = r.get("gateway")
    if gw:
        lines.append(
            f"| gateway's own time per Ask (ms) | sum of stages | total {gw['ask_total_ms_p50']:.0f} "
            f"| {gw['gateway_own_ms_p50']:.2f} ms p50, {gw['gateway_own_ms_p99']:.2f} ms p99"
            + (
                f"; {_spread(gw['gateway_own_ms'], '{:.2f}', 'asks')}"
                if "gateway_own_ms" in gw
                else ""
            )
            + " | < 5 ms "
            f"| {'yes' if gw['gateway_own_ms_p50'] < 5 else 'no'} |" + at(gw)
        )
    h = r.get("http")
    if h:
        for call, label in (("search", "Search"), ("answer", "4-token answer")):
            d = h[call]
            lines.append(
                f"| HTTP API over gRPC, {label} (ms) | gRPC: {d['grpc_ms']['median']:.1f} "
                f"| HTTP: {d['http_ms']['median']:.1f} | +{d['overhead_ms']['median']:.2f} ms "
                f"p50 ({_spread(d['overhead_ms'], '{:.2f}', 'pairs')}); ratio "
                f"{_spread(d['ratio'], '{:.3f}', 'pairs')} | reported | - |" + at(h)
            )
    ix = r.get("indexing")
    if ix:
        lines.append(
            f"| indexing chunks/s ({ix['corpus']}) | naive loop: {ix['naive_chunks_per_second']:.1f} "
            f"| gateway: {ix['gateway_chunks_per_second']:.1f} | {ix['ratio']:.1f}x"
            + (
                f"; by stretch: {_spread(ix['ratio_by_stretch'], '{:.1f}', 'stretches')}, "
                f"naive runs {_spread(ix['naive_runs'], '{:.1f}')}"
                if "ratio_by_stretch" in ix
                else ""
            )
            + " | >= 10x "
            f"| {'yes' if ix['ratio'] >= 10 else 'no'} |" + at(ix)
        )
        raw = ix.get("vs_embedder")
        if raw:
            lines.append(
                f"| indexing chunks/s vs the embedder's texts/s on the same {raw['chunks']} chunks "
                f"({raw['documents']} documents) | embedder alone: {_spread(raw['baseline'], '{:.1f}')} "
                f"| pipeline: {_spread(raw['ours'], '{:.1f}')} | {_spread(raw['ratio'])} | >= 0.9 "
                f"| {'yes' if raw['ratio']['median'] >= 0.9 else 'no'} |" + at(ix)
            )
            peak = raw["matmul_peak"]
            lines.append(
                f"| embedder GFLOP/s on those chunks (mean {raw['mean_tokens']:.0f} tokens, unpadded) "
                f"| fp32 matmul {peak['size']}², {peak['threads']} threads: {peak['gflops']:.0f} "
                f"| embedder: {raw['embedder_gflops']:.0f}, pipeline: {raw['pipeline_gflops']:.0f} "
                f"| {raw['embedder_fraction_of_peak']:.2f} of peak | reported | - |" + at(ix)
            )
    jb = r.get("jobs")
    if jb:
        for case, label in (("fresh", "from nothing"), ("unchanged", "all unchanged")):
            c = jb[case]
            lines.append(
                f"| ingestion job vs direct Ingest, {jb['documents']} documents {label} (s) "
                f"| Ingest calls: {_spread(c['baseline'])} | job: {_spread(c['ours'])} "
                f"| {_spread(c['ratio'])} | reported | - |" + at(jb)
            )
    lines += ["", "## Details", ""]
    if e:
        lines.append(
            f"- Embedder: {e['texts']} texts; the dynamic batcher formed batches of "
            f"{e['mean_batch_size']:.1f} texts on average."
        )
    if gw:
        thr = ", ".join(f"{c}: {v:.2f}/s" for c, v in gw["asks_per_second_by_concurrency"].items())
        lines.append(
            f"- Gateway: Ask p50 {gw['ask_total_ms_p50']:.0f} ms with max_tokens {gw['max_tokens']}, "
            f"time to first token {gw['client_ttft_ms_p50']:.0f} ms at the client "
            f"({gw['generator_ttft_ms_p50']:.0f} ms inside the generator); throughput by concurrent "
            f"askers: {thr}."
        )
    if ix:
        growth = ", ".join(
            f"{k}: {v['documents']} docs, {v['chunks']} chunks in {v['seconds']:.0f} s"
            for k, v in ix["growth"].items()
        )
        lines.append(f"- Indexing growth: {growth}.")
    lines.append(
        "- Memory (MiB, resident, each process tree): at rest "
        + ", ".join(f"{k} {v:.0f}" for k, v in r["memory_mib_at_rest"].items())
        + "; peak over the run "
        + ", ".join(f"{k} {v:.0f}" for k, v in r["memory_mib_peak"].items())
        + " (VmHWM summed over a tree: shared pages count twice; a whole run on commit "
        + f"{r.get('memory_commit', r['commit'])})."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench" / "results" / "latest.json"
    report = json.loads(source.read_text())
    target = ROOT / "docs" / "performance.md"
    # The hand-written analysis after the generated part survives a re-render.
    old = target.read_text() if target.exists() else ""
    notes = old[old.index(ANALYSIS) :] if ANALYSIS in old else ""
    target.write_text(render(report) + ("\n" + notes if notes else ""))


ANALYSIS = "## What the misses mean"

if __name__ == "__main__":
    main()
