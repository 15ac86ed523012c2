"""Kill each part of a running stack while it answers questions, and time what callers
see: how soon their calls fail (UNAVAILABLE, never a hang to the deadline), how soon
the gateway's health says NOT_SERVING, and how long until the supervisor has restarted
the process and asks are answered again.

    # per-key quotas off: every ask comes with the one local key
    RAGPLANE_GATEWAY_KEY_MAX_STREAMS=0 RAGPLANE_GATEWAY_KEY_REQUESTS_PER_SECOND=0 ragplane up
    ragplane ingest --collection handbook samples/handbook
    python -m bench.faults --write docs/reliability.md
    ragplane down

tests/integration/resilience/test_faults.py runs the same against a stack of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.burst import Outcome, ask_once, open_channels
from bench.harness import ROOT, commit, publish
from ragplane.ops import processes, stack
from ragplane.v1 import gateway_pb2_grpc

FAULTS = ("embedder", "retriever", "generator", "milvus")
TABLE_BEGIN = "<!-- faults table: python -m bench.faults --write docs/reliability.md -->"
TABLE_END = "<!-- end of faults table -->"
# Codes a caller may see while a part of the stack is down: anything else is a bug.
EXPECTED_CODES = {"OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED"}


@dataclass
class FaultResult:
    service: str
    deadline_s: float
    # Outcomes of the calls that ended after the kill and before recovery, by code.
    codes: dict[str, int] = field(default_factory=dict)
    # The longest a call failing during the outage took: far below its deadline.
    slowest_failure_s: float = 0.0
    first_failure_s: float | None = None  # from the kill to the first failed call
    not_serving_s: float | None = None  # from the kill to the gateway's NOT_SERVING
    restarted_s: float | None = None  # from the kill to the new process's SERVING
    recovered_s: float | None = None  # from the kill to an ask started afterwards answered
    restarts: int = 0  # the supervisor's count for the service, after

    @property
    def survived(self) -> bool:
        return set(self.codes) <= EXPECTED_CODES and self.slowest_failure_s < self.deadline_s

    @property
    def recovered(self) -> bool:
        return self.recovered_s is not None


async def _ready(layout: stack.StackLayout, name: str) -> bool:
    if name == "milvus":
        return await processes.port_accepts(layout.host, layout.ports["milvus"])
    return await processes.serving(layout.address(name))


async def kill_and_recover(
    layout: stack.StackLayout,
    name: str,
    channels: list[grpc.aio.Channel],
    *,
    collection: str = "handbook",
    callers: int = 3,
    deadline_s: float = 120.0,
    max_tokens: int = 8,
    recover_within_s: float = 400.0,
) -> FaultResult:
    """SIGKILL `name` while `callers` ask in a loop; returns once an ask started after
    the restart is answered, or recover_within_s has passed."""
    stubs = [gateway_pb2_grpc.GatewayServiceStub(c) for c in channels]
    result = FaultResult(name, deadline_s)
    ended: list[tuple[float, float, Outcome]] = []  # (started, ended, outcome)
    stop, flowing = asyncio.Event(), asyncio.Event()

    async def caller(i: int) -> None:
        while not stop.is_set():
            started = time.monotonic()
            outcome = await ask_once(stubs[i % len(stubs)], deadline_s, max_tokens, collection)
            ended.append((started, time.monotonic(), outcome))
            if outcome.code == "OK":
                flowing.set()
            else:
                await asyncio.sleep(0.25)  # a failing caller backs off a little

    tasks = [asyncio.create_task(caller(i)) for i in range(callers)]
    try:
        # Asks are answered: kill mid-load.
        await asyncio.wait_for(flowing.wait(), recover_within_s)
        pid = stack.running_pid(layout, name)
        assert pid is not None, f"{name} is not running"
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        await _watch(layout, name, pid, killed, ended, result, recover_within_s)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    during = [
        o
        for s, e, o in ended
        if e >= killed and (result.recovered_s is None or s < killed + result.recovered_s)
    ]
    result.codes = dict(Counter(o.code for o in during))
    failures = [(e, o) for s, e, o in ended if e >= killed and o.code != "OK"]
    result.slowest_failure_s = max((o.seconds for _, o in failures), default=0.0)
    if failures:
        result.first_failure_s = min(e for e, _ in failures) - killed
    result.restarts = stack.restarts(layout).get(name, 0)
    return result


async def _watch(
    layout: stack.StackLayout,
    name: str,
    old_pid: int,
    killed: float,
    ended: list[tuple[float, float, Outcome]],
    result: FaultResult,
    within_s: float,
) -> None:
    gateway = layout.address("gateway")
    while time.monotonic() - killed < within_s:
        now = time.monotonic() - killed
        if (
            result.not_serving_s is None
            and await processes.health_status(gateway, 0.5) != "SERVING"
        ):
            result.not_serving_s = now
        if result.restarted_s is None:
            pid = stack.running_pid(layout, name)
            if pid is not None and pid != old_pid and await _ready(layout, name):
                result.restarted_s = time.monotonic() - killed
        if result.restarted_s is not None:
            restarted_at = killed + result.restarted_s
            answered = [e for s, e, o in ended if s >= restarted_at and o.code == "OK"]
            if answered:
                result.recovered_s = min(answered) - killed
                return
        await asyncio.sleep(0.25)


def table(results: list[FaultResult], when: str) -> str:
    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    lines = [
        f"Measured {when}.",
        "",
        "| killed (SIGKILL) | calls during the outage | slowest failing call | first failure "
        "| gateway NOT_SERVING | restarted (SERVING) | first answer again | survived, recovered |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        codes = ", ".join(f"{k} {n}" for k, n in sorted(r.codes.items()))
        verdict = f"{'yes' if r.survived else 'NO'}, {'yes' if r.recovered else 'NO'}"
        lines.append(
            f"| {r.service} | {codes} | {r.slowest_failure_s:.1f} s (deadline "
            f"{r.deadline_s:.0f} s) | {s(r.first_failure_s)} | {s(r.not_serving_s)} "
            f"| {s(r.restarted_s)} | {s(r.recovered_s)} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> list[FaultResult]:
    from ragplane.ops.cli import layout_from_env

    layout = layout_from_env()
    channels = open_channels(layout.address("gateway"), 2)
    results = []
    try:
        for name in args.services:
            print(f"killing {name}", flush=True)
            results.append(
                await kill_and_recover(layout, name, channels, collection=args.collection)
            )
            print(json.dumps(asdict(results[-1])), flush=True)
    finally:
        for channel in channels:
            await channel.close()
    return results


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    p.add_argument("--collection", default="handbook")
    p.add_argument("--services", nargs="+", default=list(FAULTS), choices=FAULTS)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faults.json")
    p.add_argument("--write", type=Path, help="replace the faults table in this Markdown file")
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report: dict[str, Any] = {"commit": commit(), "date": when, "load_after": load}
    report["faults"] = [asdict(r) for r in results]
    text = table(results, f"{when}, commit {report['commit']}, load average after {load}")
    publish(report, text, args.out, args.write, TABLE_BEGIN, TABLE_END)


if __name__ == "__main__":
    main()
