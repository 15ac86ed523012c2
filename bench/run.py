"""`make bench`: every benchmark against a fresh one-machine stack; `--smoke` for seconds-long
runs on tiny input (the test suite runs those so the benchmarks cannot rot)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import embedder, flush, gateway, generator, http, indexing, jobs, retriever
from bench.harness import ROOT, Bench, commit
from ragplane.client import GrpcClient
from ragplane.ops import stack
from ragplane.ops.cli import ingest
from ragplane.ops.processes import free_ports

BENCHMARKS = {
    "embedder": embedder.run,
    "retriever": retriever.run,
    "flush": flush.run,
    "gateway": gateway.run,
    "http": http.run,
    "indexing": indexing.run,
    "jobs": jobs.run,
    "generator": generator.run,
}


def rss_now(layout: stack.StackLayout) -> dict[str, float]:
    """Current resident memory (MiB) of each stack process tree."""
    import psutil

    out = {}
    for name in ("milvus", *stack.SERVICES):
        pid = stack.running_pid(layout, name)
        if pid is None:
            continue
        root = psutil.Process(pid)
        out[name] = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20
    return out


async def run_all(bench: Bench, names: list[str]) -> dict[str, Any]:
    # The handbook in the default collection is what the query benchmarks search.
    await ingest(GrpcClient(bench.channel("gateway")), [indexing.CORPUS], out=io.StringIO())
    report: dict[str, Any] = {
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "smoke": bench.smoke,
        "memory_mib_at_rest": rss_now(bench.layout),
    }
    for name in names:
        started = time.perf_counter()
        report[name] = await BENCHMARKS[name](bench)
        report[name]["seconds"] = round(time.perf_counter() - started, 1)
        report[name]["commit"] = report["commit"]
        print(f"{name}: {json.dumps(report[name], indent=1)}", flush=True)
    report["memory_commit"] = report["commit"]
    report["memory_mib_peak"] = {
        k: v / 2**20 for k, v in stack.peak_rss_bytes(bench.layout).items()
    }
    return report


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="ragplane-bench-"))
    models = ROOT / ".ragplane" / "models"
    models.mkdir(parents=True, exist_ok=True)
    (state / "models").symlink_to(models, target_is_directory=True)
    ports = free_ports(11)
    layout = stack.StackLayout(
        state_dir=state,
        ports=dict(zip(("milvus", *stack.SERVICES), ports[:5], strict=True)),
        metrics_ports=dict(zip(stack.SERVICES, ports[5:9], strict=True)),
        http_port=ports[9],
        postgres_port=ports[10],
    )
    # The retriever has the causal-LM reranker loaded, off unless a request asks for it,
    # so the retriever benchmark can measure reranked searches too.
    # The stack's vLLM engine is bound to core 0, the generator benchmark's baseline to 1.
    env = {
        "RAGPLANE_RERANKER": "causal-lm",
        "RAGPLANE_RERANK_BY_DEFAULT": "false",
        "VLLM_CPU_OMP_THREADS_BIND": "0",
        # The benchmarks measure the pipeline, the burst 1,000 asks from one key: no quotas.
        "RAGPLANE_GATEWAY_KEY_REQUESTS_PER_SECOND": "0",
        "RAGPLANE_GATEWAY_KEY_MAX_STREAMS": "0",
    }
    await stack.up(layout, env_extra=env, report=lambda line: print(line, flush=True))
    bench = Bench(layout, smoke=args.smoke)
    try:
        return await run_all(bench, args.only.split(",") if args.only else list(BENCHMARKS))
    finally:
        await bench.close()
        stack.down(layout, report=lambda _: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    if args.only and args.out.exists():
        # The benchmarks not rerun keep their results (each says its commit).
        previous = json.loads(args.out.read_text())
        for name in BENCHMARKS:
            if name not in report and name in previous:
                previous[name].setdefault("commit", previous.get("commit", "unknown"))
                report[name] = previous[name]
        # Memory under load is a whole run's peak: a partial run keeps the last full one's.
        if previous.get("memory_mib_peak"):
            report["memory_mib_at_rest"] = previous["memory_mib_at_rest"]
            report["memory_mib_peak"] = previous["memory_mib_peak"]
            report["memory_commit"] = previous.get("memory_commit", previous.get("commit"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
