"""Every benchmark in bench/ runs in smoke mode (seconds, tiny input) against the test
stack, so none can rot. Timings are not asserted: benchmarks measure, tests check."""

from __future__ import annotations

import io

import pytest

from bench import run as bench_run
from bench.harness import Bench
from ragplane.client import GrpcClient
from ragplane.ops.cli import ingest
from tests.support import ROOT


@pytest.fixture(scope="module")
async def smoke_bench(running_stack, channels):
    bench = Bench(running_stack, smoke=True)
    gateway = GrpcClient(bench.channel("gateway"))
    await ingest(gateway, [ROOT / "samples" / "handbook"], out=io.StringIO())
    yield bench
    await bench.close()


@pytest.mark.parametrize("name", list(bench_run.BENCHMARKS))
async def test_benchmark_runs_in_smoke_mode(smoke_bench, name):
    result = await bench_run.BENCHMARKS[name](smoke_bench)
    assert result["what"]
    numbers = [(k, v) for k, v in _leaves(result) if isinstance(v, float)]
    assert numbers and all(v == v for _, v in numbers)  # measured, no NaN
    # A difference of two medians (the service's own time) may fall below zero in noise.
    assert all(v >= 0 for k, v in numbers if not k.startswith(DIFFERENCES)), numbers


DIFFERENCES = ("added_", "gateway_own_", "overhead_", "http_overhead_")


def _leaves(value, key=""):
    """(key, number) pairs; inside a difference (its spread, say) the difference's key."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, key if key.startswith(DIFFERENCES) else k)
    else:
        yield key, value
