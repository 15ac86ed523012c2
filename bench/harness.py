"""What every benchmark shares: a stack to run against, repeated timing, and statistics."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from ragplane.channels import open_channel
from ragplane.client import api_key_interceptors
from ragplane.ops import stack

ROOT = Path(__file__).resolve().parents[1]


async def metric_samples(layout: stack.StackLayout, service: str) -> dict[str, float]:
    """The unlabelled samples a stack service's Prometheus endpoint exposes now, by name
    (a histogram's as NAME_sum and NAME_count), parsed by prometheus_client."""
    url = f"http://{layout.host}:{layout.metrics_ports[service]}/metrics"
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(url)).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


CORPUS = ROOT / "samples" / "handbook"


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"


def write_between(doc: Path, begin: str, end: str, text: str) -> None:
    """Replaces what lies between the markers `begin` and `end` of the Markdown `doc`
    (a benchmark's table) with `text`."""
    content = doc.read_text()
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(content):
        raise SystemExit(f"{doc} has no markers {begin} ... {end}")
    doc.write_text(pattern.sub(lambda _: f"{begin}\n{text}{end}", content))


def publish(
    report: dict[str, Any], text: str, out: Path, doc: Path | None, begin: str, end: str
) -> None:
    """A benchmark's results: the report as JSON in `out`, its table printed, and the
    table written between the markers of `doc` when one is given (--write)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(text)
    if doc is not None:
        write_between(doc, begin, end, text)


def spread(values: list[float]) -> dict[str, float]:
    """Median and the range of the middle half (IQR): robust on noisy machines."""
    values = sorted(values)
    if len(values) == 1:
        return {"median": values[0], "q1": values[0], "q3": values[0], "runs": 1}
    q = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2], "runs": len(values)}


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


@dataclass
class Bench:
    """A running stack and the channels a benchmark drives it through."""

    layout: stack.StackLayout
    smoke: bool
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def channel(self, name: str) -> grpc.aio.Channel:
        if name not in self.channels:
            key = self.layout.api_key() if name == "gateway" else None
            interceptors = api_key_interceptors(key) if key else []
            self.channels[name] = open_channel(self.layout.address(name), interceptors=interceptors)
        return self.channels[name]

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


async def alternate(
    runs: int,
    baseline: Callable[[], Awaitable[float]],
    ours: Callable[[], Awaitable[float]],
    first: str = "baseline",
) -> dict[str, Any]:
    """Runs baseline and ours in turns (ABAB…, or BABA… with first="ours") so drift hits
    both; ratio per pair."""
    base, mine, ratios = [], [], []
    for _ in range(runs):
        if first == "ours":
            m = await ours()
            b = await baseline()
        else:
            b = await baseline()
            m = await ours()
        base.append(b)
        mine.append(m)
        ratios.append(m / b)
    return {"baseline": spread(base), "ours": spread(mine), "ratio": spread(ratios)}


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
