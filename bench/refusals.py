"""What one refused ask costs the gateway: CPU per refusal, against a bare grpc.aio
server refusing the same calls (gRPC's own cost, the floor), in alternating rounds.

    ragplane up
    python -m bench.refusals --write docs/reliability.md
    ragplane down

A burst's refusals are CPU-bound: 1,000 calls arriving at once are refused one after the
other on the gateway's event loop, so the slowest refusal comes after about 1,000 times
the CPU of one (docs/reliability.md). Each round sends --asks Ask streams at once from
--processes client processes (as bench.burst does) to one of two servers:

- the floor: a grpc.aio server whose Ask sets RESOURCE_EXHAUSTED, a message and a
  retry-after trailer and returns, the least a Python gRPC server can do per refusal;
- ragplane: a second gateway, started by this benchmark beside the stack's with one ask
  slot and no queue, so that with one ask held in flight every call of the round goes
  through authentication, the servicer and admission control and is refused there.

The servers' CPU time (user + system) over each round, divided by its refusals, is the
figure; the ratio is per pair of rounds, run in turns so that drift hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import grpc
import psutil

from bench.burst import QUESTION, Outcome, ask_once, burst_share, open_channels
from bench.harness import ROOT, commit, publish, spread
from ragplane.ops import processes, stack
from ragplane.v1 import gateway_pb2_grpc

TABLE_BEGIN = "<!-- refusals table: python -m bench.refusals --write docs/reliability.md -->"
TABLE_END = "<!-- end of refusals table -->"
HOLD_MAX_TOKENS = 512  # well inside the context: a longer one is refused
HOLD_QUESTION = f"{QUESTION} Explain every step in full detail, then explain it again."


class Floor(gateway_pb2_grpc.GatewayServiceServicer):
    """Refuses every Ask as cheaply as grpc.aio allows, with what a refusal carries."""

    async def Ask(self, request, context):  # noqa: N802
        context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
        context.set_details("1 ask is ahead and no queue is kept; retry in 5 s")
        context.set_trailing_metadata((("retry-after", "5"),))
        return
        yield  # an async generator, as a streaming handler is


async def serve_floor(address: str) -> None:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(Floor(), server)
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


async def round_against(
    target: str, proc: psutil.Process, args: argparse.Namespace
) -> tuple[float, list[Outcome]]:
    """One round: --asks calls at once; the server's CPU seconds from the moment they
    start to the last answer, and the calls' outcomes."""
    n, asks = args.processes, args.asks
    shares = [asks // n + (i < asks % n) for i in range(n)]
    start_at = time.time() + 3.0  # every client process spawned and connected by then
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            loop.run_in_executor(pool, burst_share, target, k, 60.0, 16, args.collection, start_at)
            for k in shares
        ]
        await asyncio.sleep(max(0.0, start_at - time.time()))
        before = cpu_seconds(proc)
        shares_done = await asyncio.gather(*futures)
        used = cpu_seconds(proc) - before
    return used, [o for share in shares_done for o in share]


async def hold_slot(target: str, collection: str, stop: asyncio.Event) -> None:
    """Keeps one long ask in flight on the one-slot gateway, starting the next as soon as
    one ends (a refused try waits a little: the slot is someone else's)."""
    channels = open_channels(target, 1)
    stub = gateway_pb2_grpc.GatewayServiceStub(channels[0])
    try:
        while not stop.is_set():
            outcome = await ask_once(stub, 600, HOLD_MAX_TOKENS, collection, HOLD_QUESTION)
            if outcome.code != "OK":
                await asyncio.sleep(0.05)
    finally:
        await channels[0].close()


def summarize(cpu_s: float, outcomes: list[Outcome]) -> dict[str, Any]:
    refused = [o for o in outcomes if o.code == "RESOURCE_EXHAUSTED"]
    hinted = sum(o.retry_after is not None for o in refused)
    return {
        "calls": len(outcomes),
        "refused": len(refused),
        "with_retry_hint": hinted,
        "other_codes": sorted({o.code for o in outcomes} - {"RESOURCE_EXHAUSTED"}),
        "cpu_ms_per_refusal": 1000 * cpu_s / max(1, len(refused)),
        "slowest_refusal_s": max((o.seconds for o in refused), default=0.0),
    }


async def measure(layout: stack.StackLayout, args: argparse.Namespace) -> dict[str, Any]:
    """The rounds against the stack of `layout` (with the handbook in --collection)."""
    floor_port, gateway_port, http_port, metrics_port = processes.free_ports(4)
    floor_address = f"127.0.0.1:{floor_port}"
    gateway_address = f"127.0.0.1:{gateway_port}"
    log_dir = layout.log_dir
    floor = processes.start_process(
        [sys.executable, "-m", "bench.refusals", "--floor", floor_address],
        log_dir / "bench-refusals-floor.log",
        cwd=ROOT,
    )
    # The stack's own environment (backends, keys, jobs database), one slot, no queue.
    env = layout.service_env(
        {
            "RAGPLANE_GATEWAY_ADDR": gateway_address,
            "RAGPLANE_GATEWAY_HTTP_ADDR": f"127.0.0.1:{http_port}",
            "RAGPLANE_GATEWAY_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            "RAGPLANE_GATEWAY_MAX_ASKS_IN_FLIGHT": "1",
            "RAGPLANE_GATEWAY_MAX_QUEUED_ASKS": "0",
            "RAGPLANE_GATEWAY_KEY_MAX_STREAMS": "0",
            "RAGPLANE_GATEWAY_KEY_REQUESTS_PER_SECOND": "0",
        }
    )
    gateway = processes.start_process(
        stack.command(layout, "gateway"), log_dir / "bench-refusals-gateway.log", env=env
    )
    stop = asyncio.Event()
    holder: asyncio.Task[None] | None = None
    try:
        await floor.wait_accepting("127.0.0.1", floor_port, 60)
        await gateway.wait_serving(gateway_address, 120)
        holder = asyncio.create_task(hold_slot(gateway_address, args.collection, stop))
        await asyncio.sleep(3.0)  # the held ask is in flight
        floor_proc, gateway_proc = psutil.Process(floor.pid), psutil.Process(gateway.pid)
        rounds: list[dict[str, Any]] = []
        for i in range(args.runs + 1):  # the first pair warms both up and is not counted
            base = summarize(*await round_against(floor_address, floor_proc, args))
            ours = summarize(*await round_against(gateway_address, gateway_proc, args))
            print(
                f"pair {i}: floor {base['cpu_ms_per_refusal']:.3f} ms, "
                f"ragplane {ours['cpu_ms_per_refusal']:.3f} ms per refusal; slowest "
                f"{base['slowest_refusal_s']:.2f} / {ours['slowest_refusal_s']:.2f} s",
                flush=True,
            )
            if i:
                rounds.append({"floor": base, "ragplane": ours})
    finally:
        stop.set()
        if holder is not None:
            holder.cancel()
            with suppress(asyncio.CancelledError):
                await holder
        gateway.stop()
        floor.stop()

    def figures(side: str, key: str) -> dict[str, float]:
        return spread([r[side][key] for r in rounds])

    return {
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores",
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "asks_per_round": args.asks,
        "client_processes": args.processes,
        "rounds": rounds,
        "floor_cpu_ms": figures("floor", "cpu_ms_per_refusal"),
        "ragplane_cpu_ms": figures("ragplane", "cpu_ms_per_refusal"),
        "ratio": spread(
            [r["ragplane"]["cpu_ms_per_refusal"] / r["floor"]["cpu_ms_per_refusal"] for r in rounds]
        ),
        "floor_slowest_s": figures("floor", "slowest_refusal_s"),
        "ragplane_slowest_s": figures("ragplane", "slowest_refusal_s"),
    }


def table(report: dict[str, Any]) -> str:
    def cell(s: dict[str, float], scale: float = 1.0, unit: str = "") -> str:
        return f"{s['median'] * scale:.2f}{unit} ({s['q1'] * scale:.2f}-{s['q3'] * scale:.2f})"

    rounds = report["rounds"]
    refused = sum(r["ragplane"]["refused"] for r in rounds)
    calls = sum(r["ragplane"]["calls"] for r in rounds)
    hinted = sum(r["ragplane"]["with_retry_hint"] for r in rounds)
    rows = [
        (
            "when",
            f"{report['date']}, commit {report['commit']}, {report['machine']}, "
            f"load average after {report['load_average']}",
        ),
        (
            "rounds",
            f"{len(rounds)} pairs of {report['asks_per_round']} asks at once from "
            f"{report['client_processes']} client processes",
        ),
        ("CPU per refusal, bare grpc.aio (the floor)", cell(report["floor_cpu_ms"], unit=" ms")),
        ("CPU per refusal, ragplane's gateway", cell(report["ragplane_cpu_ms"], unit=" ms")),
        ("ragplane / floor, per pair", cell(report["ratio"], unit="x")),
        (
            "slowest refusal, floor / ragplane",
            f"{cell(report['floor_slowest_s'], unit=' s')} / "
            f"{cell(report['ragplane_slowest_s'], unit=' s')}",
        ),
        (
            "ragplane's calls refused, with a retry hint",
            f"{refused} of {calls}, {hinted} with a hint",
        ),
    ]
    lines = ["| | median (IQR) |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.refusals", description=__doc__)
    p.add_argument("--asks", type=int, default=1000, help="asks at once per round")
    p.add_argument("--runs", type=int, default=6, help="pairs of rounds counted")
    p.add_argument("--processes", type=int, default=4, help="client processes")
    p.add_argument("--collection", default="handbook", help="where samples/handbook is")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "refusals.json")
    p.add_argument("--write", type=Path, help="replace the refusals table in this Markdown file")
    p.add_argument("--floor", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.floor:
        asyncio.run(serve_floor(args.floor))
        return
    from ragplane.ops.cli import layout_from_env

    report = asyncio.run(measure(layout_from_env(), args))
    publish(report, table(report), args.out, args.write, TABLE_BEGIN, TABLE_END)


if __name__ == "__main__":
    main()
