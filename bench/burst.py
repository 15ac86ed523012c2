"""A burst of concurrent Ask streams against a running stack: how many are answered, how
many refused, how fast a refusal comes and whether it says when to retry, whether any
call was worked on and then dropped at its deadline, and the gateway's peak memory.

    # per-key quotas off: every ask comes with the one local key
    RAGPLANE_GATEWAY_KEY_MAX_STREAMS=0 RAGPLANE_GATEWAY_KEY_REQUESTS_PER_SECOND=0 ragplane up
    ragplane ingest --collection handbook samples/handbook
    python -m bench.burst --asks 1000 --deadline 300 --write docs/reliability.md
    ragplane down

First the stack's capacity is measured: asks answered per second at saturation (a closed
loop of --concurrency callers for --saturate seconds, which also gives the gateway's
admission control a measured service time). Then --asks calls start at once, each with a
--deadline client deadline. The bar (docs/reliability.md): at least 99 % answered, or,
where capacity x deadline is below --asks, at least 90 % of that capacity answered;
every other call refused within 1 s with a retry hint; no DEADLINE_EXCEEDED after work.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import statistics
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil

from bench.harness import ROOT, commit, metric_samples, percentile, publish
from ragplane.channels import client_channel_options
from ragplane.client import api_key_for, api_key_interceptors
from ragplane.ops import stack
from ragplane.v1 import gateway_pb2, gateway_pb2_grpc

QUESTION = "How do I roll back a bad deploy of ledger-api?"
# Calls are spread over this many connections, as many callers would open.
CONNECTIONS = 8
REFUSED_WITHIN_S = 1.0
TABLE_BEGIN = "<!-- burst table: python -m bench.burst --write docs/reliability.md -->"
TABLE_END = "<!-- end of burst table -->"


@dataclass
class Outcome:
    """One Ask as its caller saw it."""

    code: str  # OK or the status name
    seconds: float  # from the call to its end (answer or error)
    worked: bool  # the gateway sent something (citations) before it ended
    retry_after: float | None = None
    message: str = ""


@dataclass
class BurstResult:
    asks: int
    deadline_s: float
    max_tokens: int
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0
    gateway_peak_rss_mib: float = 0.0
    gateway_rss_before_mib: float = 0.0

    def count(self, code: str) -> int:
        return sum(o.code == code for o in self.outcomes)

    @property
    def answered(self) -> int:
        return self.count("OK")

    @property
    def refused(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.code == "RESOURCE_EXHAUSTED"]

    @property
    def refused_early(self) -> int:
        """Refused within REFUSED_WITHIN_S, before any work, with a retry hint."""
        return sum(
            o.seconds <= REFUSED_WITHIN_S and not o.worked and o.retry_after is not None
            for o in self.refused
        )

    @property
    def deadline_after_work(self) -> int:
        return sum(o.code == "DEADLINE_EXCEEDED" and o.worked for o in self.outcomes)

    def summary(self) -> dict[str, Any]:
        answered = [o.seconds for o in self.outcomes if o.code == "OK"]
        refused = [o.seconds for o in self.refused]
        hints = [o.retry_after for o in self.refused if o.retry_after is not None]
        return {
            "asks": self.asks,
            "deadline_s": self.deadline_s,
            "max_tokens": self.max_tokens,
            "codes": dict(Counter(o.code for o in self.outcomes)),
            "answered": self.answered,
            "refused": len(refused),
            "refused_early_with_hint": self.refused_early,
            "deadline_exceeded_after_work": self.deadline_after_work,
            "answer_s": _spread(answered),
            "refusal_s": _spread(refused),
            "refused_by_time": {
                "<=1s": sum(t <= 1 for t in refused),
                "1-5s": sum(1 < t <= 5 for t in refused),
                ">5s": sum(t > 5 for t in refused),
            },
            "retry_after_s": _spread(hints),
            "wall_s": self.wall_s,
            "gateway_rss_before_mib": self.gateway_rss_before_mib,
            "gateway_peak_rss_mib": self.gateway_peak_rss_mib,
        }


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": statistics.median(values),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def open_channels(
    target: str, count: int = CONNECTIONS, api_key: str | None = None
) -> list[grpc.aio.Channel]:
    """`count` channels with a connection each (no shared subchannel pool), each call
    carrying the API key (api_key_for: this one, $RAGPLANE_API_KEY or the local stack's)."""
    options = [*client_channel_options(), ("grpc.use_local_subchannel_pool", 1)]
    key = api_key_for(api_key)
    interceptors = api_key_interceptors(key) if key else None
    return [
        grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        for _ in range(count)
    ]


async def ask_once(
    stub: gateway_pb2_grpc.GatewayServiceStub,
    deadline_s: float,
    max_tokens: int,
    collection: str,
    question: str = QUESTION,
) -> Outcome:
    """One Ask stream read to its end."""
    started = time.perf_counter()
    worked = False
    call = stub.Ask(
        gateway_pb2.AskRequest(question=question, max_tokens=max_tokens, collection=collection),
        timeout=deadline_s,
    )
    try:
        async for event in call:
            worked = True
            if event.HasField("finished"):
                break
    except grpc.aio.AioRpcError as exc:
        hint = dict(exc.trailing_metadata() or ()).get("retry-after")
        return Outcome(
            exc.code().name,
            time.perf_counter() - started,
            worked,
            float(hint) if hint is not None else None,
            exc.details() or "",
        )
    return Outcome("OK", time.perf_counter() - started, worked)


async def burst(
    channels: list[grpc.aio.Channel],
    asks: int,
    deadline_s: float,
    max_tokens: int,
    collection: str,
    gateway_pid: int | None = None,
) -> BurstResult:
    """`asks` Ask streams started at once, each with a `deadline_s` client deadline;
    the gateway's resident memory sampled meanwhile."""
    stubs = [gateway_pb2_grpc.GatewayServiceStub(c) for c in channels]
    result = BurstResult(asks, deadline_s, max_tokens)
    result.gateway_rss_before_mib = _rss_mib(gateway_pid)
    peak = result.gateway_rss_before_mib
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mib(gateway_pid))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    result.outcomes = await asyncio.gather(
        *(ask_once(stubs[i % len(stubs)], deadline_s, max_tokens, collection) for i in range(asks))
    )
    result.wall_s = time.perf_counter() - started
    done.set()
    await sampler
    result.gateway_peak_rss_mib = max(peak, _rss_mib(gateway_pid))
    return result


def burst_share(
    target: str, asks: int, deadline_s: float, max_tokens: int, collection: str, start_at: float
) -> list[Outcome]:
    """One client process's share of a burst: its asks start at wall-clock `start_at`."""

    async def run() -> list[Outcome]:
        channels = open_channels(target, max(1, CONNECTIONS // 4))
        try:
            for channel in channels:
                await channel.channel_ready()
            await asyncio.sleep(max(0.0, start_at - time.time()))
            stubs = [gateway_pb2_grpc.GatewayServiceStub(c) for c in channels]
            return await asyncio.gather(
                *(
                    ask_once(stubs[i % len(stubs)], deadline_s, max_tokens, collection)
                    for i in range(asks)
                )
            )
        finally:
            for channel in channels:
                await channel.close()

    return asyncio.run(run())


async def burst_from_processes(
    target: str,
    asks: int,
    deadline_s: float,
    max_tokens: int,
    collection: str,
    processes: int,
    gateway_pid: int | None = None,
) -> BurstResult:
    """burst() with the callers spread over `processes` client processes: one Python
    process issuing 1,000 calls and reading their answers would itself delay them by
    about a second, and be measured as the gateway's refusal time."""
    result = BurstResult(asks, deadline_s, max_tokens)
    result.gateway_rss_before_mib = peak = _rss_mib(gateway_pid)
    shares = [asks // processes + (i < asks % processes) for i in range(processes)]
    start_at = time.time() + 5.0  # every process spawned and connected by then
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            loop.run_in_executor(
                pool, burst_share, target, n, deadline_s, max_tokens, collection, start_at
            )
            for n in shares
        ]
        gathered = asyncio.gather(*futures)
        while not gathered.done():
            peak = max(peak, _rss_mib(gateway_pid))
            await asyncio.wait([gathered], timeout=0.25)
        result.outcomes = [o for share in gathered.result() for o in share]
    result.wall_s = time.time() - start_at
    result.gateway_peak_rss_mib = max(peak, _rss_mib(gateway_pid))
    return result


def _rss_mib(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return 0.0


async def saturate(
    channels: list[grpc.aio.Channel],
    concurrency: int,
    seconds: float,
    max_tokens: int,
    collection: str,
) -> dict[str, Any]:
    """Asks answered per second with `concurrency` callers asking again as soon as
    answered, for `seconds` (after one round to warm up)."""
    stubs = [gateway_pb2_grpc.GatewayServiceStub(c) for c in channels]
    await asyncio.gather(
        *(ask_once(stubs[i % len(stubs)], 600, max_tokens, collection) for i in range(concurrency))
    )
    answered: list[float] = []
    codes: Counter[str] = Counter()
    stop_at = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        while time.perf_counter() < stop_at:
            outcome = await ask_once(stubs[i % len(stubs)], 600, max_tokens, collection)
            codes[outcome.code] += 1
            if outcome.code == "OK":
                answered.append(time.perf_counter())

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "seconds": elapsed,
        "answered": len(answered),
        "codes": dict(codes),
        "asks_per_second": len(answered) / elapsed,
    }


def verdict(summary: dict[str, Any], capacity: dict[str, Any]) -> dict[str, Any]:
    """The bar of docs/reliability.md, checked."""
    asks = summary["asks"]
    can_answer = capacity["asks_per_second"] * summary["deadline_s"]
    bound = asks if can_answer >= asks else can_answer
    needed = 0.99 * asks if can_answer >= asks else 0.9 * can_answer
    others = asks - summary["answered"]
    return {
        "capacity_in_deadline": can_answer,
        "answered_needed": needed,
        "answered_ok": summary["answered"] >= needed,
        "answered_share_of_bound": summary["answered"] / bound if bound else 0.0,
        "others_refused_early_with_hint": summary["refused_early_with_hint"] == others,
        "no_deadline_exceeded_after_work": summary["deadline_exceeded_after_work"] == 0,
    }


def table(report: dict[str, Any]) -> str:
    """The Markdown table of docs/reliability.md."""
    s, cap, v = report["burst"], report["capacity"], report["verdict"]
    codes = ", ".join(f"{k} {n}" for k, n in sorted(s["codes"].items()))
    refusal = s["refusal_s"] or {"p50": 0, "p99": 0, "max": 0}
    answer = s["answer_s"] or {"p50": 0, "p99": 0, "max": 0}
    hints = s["retry_after_s"] or {"p50": 0, "max": 0}
    rows = [
        ("when", f"{report['date']}, commit {report['commit']}, {report['machine']}"),
        ("load average before / after", f"{report['load_before']} / {report['load_after']}"),
        (
            "capacity (asks/s at saturation)",
            f"{cap['asks_per_second']:.2f} ({cap['answered']} answered by "
            f"{cap['concurrency']} callers in {cap['seconds']:.0f} s)",
        ),
        (
            "capacity x deadline",
            f"{v['capacity_in_deadline']:.0f} asks in {s['deadline_s']:.0f} s",
        ),
        *(
            [
                (
                    "admission's service-time estimate at the burst",
                    f"{g['service_s_estimate']:.2f} s per ask over {g['slots']:.0f} slots "
                    f"(the capacity says {g['slots'] / cap['asks_per_second']:.2f} s)",
                )
            ]
            if (g := report.get("admission_at_burst")) and cap["asks_per_second"] > 0
            else []
        ),
        ("asks started at once", f"{s['asks']} (max_tokens {s['max_tokens']})"),
        ("outcomes", codes),
        (
            "answered",
            f"{s['answered']} (needed {v['answered_needed']:.0f}: "
            f"{'met' if v['answered_ok'] else 'NOT met'}); "
            f"{100 * v['answered_share_of_bound']:.0f} % of min(asks, capacity x deadline)",
        ),
        (
            "answer time p50 / p99 / max",
            f"{answer['p50']:.1f} / {answer['p99']:.1f} / {answer['max']:.1f} s",
        ),
        (
            "refused within 1 s with a retry hint",
            f"{s['refused_early_with_hint']} of {s['asks'] - s['answered']} not answered"
            f" ({'all' if v['others_refused_early_with_hint'] else 'NOT all'})",
        ),
        (
            "refusal time p50 / p99 / max",
            f"{refusal['p50'] * 1000:.0f} / {refusal['p99'] * 1000:.0f} / "
            f"{refusal['max'] * 1000:.0f} ms",
        ),
        (
            "refused within 1 s / 1-5 s / later",
            " / ".join(str(n) for n in s["refused_by_time"].values()),
        ),
        ("retry-after p50 / max", f"{hints['p50']:.0f} / {hints['max']:.0f} s"),
        ("DEADLINE_EXCEEDED after work", str(s["deadline_exceeded_after_work"])),
        (
            "gateway memory before / peak",
            f"{s['gateway_rss_before_mib']:.0f} / {s['gateway_peak_rss_mib']:.0f} MiB",
        ),
        ("burst wall time", f"{s['wall_s']:.0f} s"),
    ]
    lines = ["| | |", "| --- | --- |", *(f"| {k} | {v_} |" for k, v_ in rows)]
    return "\n".join(lines) + "\n"


async def admission_gauges(layout: stack.StackLayout) -> dict[str, float]:
    """The gateway's admission gauges (slots, service-time estimate) from its metrics
    endpoint: what admission plans the burst with."""
    try:
        samples = await metric_samples(layout, "gateway")
    except httpx.HTTPError:
        return {}
    return {
        "slots": samples["ragplane_gateway_asks_in_flight_limit"],
        "service_s_estimate": samples["ragplane_gateway_ask_service_seconds_estimate"],
    }


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from ragplane.ops.cli import layout_from_env

    layout = layout_from_env()
    target = args.gateway or layout.address("gateway")
    gateway_pid = stack.running_pid(layout, "gateway") if not args.gateway else None
    channels = open_channels(target)
    try:
        load_before = _load()
        print(f"load {load_before}; saturating with {args.concurrency} callers", flush=True)
        capacity = await saturate(
            channels, args.concurrency, args.saturate, args.max_tokens, args.collection
        )
        rate = capacity["asks_per_second"]
        gauges = {} if args.gateway else await admission_gauges(layout)
        print(f"capacity {rate:.2f} asks/s; admission {gauges}; burst of {args.asks}", flush=True)
        result = await burst_from_processes(
            target,
            args.asks,
            args.deadline,
            args.max_tokens,
            args.collection,
            args.processes,
            gateway_pid,
        )
    finally:
        for channel in channels:
            await channel.close()
    summary = result.summary()
    report = {
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_before": load_before,
        "load_after": _load(),
        "capacity": capacity,
        "admission_at_burst": gauges,
        "burst": summary,
    }
    report["verdict"] = verdict(summary, capacity)
    return report


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__)
    p.add_argument("--asks", type=int, default=1000)
    p.add_argument("--deadline", type=float, default=300.0, help="client deadline, seconds")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--collection", default="handbook")
    p.add_argument("--concurrency", type=int, default=8, help="callers while saturating")
    p.add_argument("--saturate", type=float, default=120.0, help="seconds of saturation")
    p.add_argument("--processes", type=int, default=4, help="client processes of the burst")
    p.add_argument("--gateway", help="HOST:PORT (default: the local stack's)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "burst.json")
    p.add_argument("--write", type=Path, help="replace the burst table in this Markdown file")
    args = p.parse_args()
    report = asyncio.run(main_async(args))
    publish(report, table(report), args.out, args.write, TABLE_BEGIN, TABLE_END)


if __name__ == "__main__":
    main()
