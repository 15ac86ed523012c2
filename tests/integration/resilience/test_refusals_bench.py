"""bench/refusals.py at the suite's scale: the floor server and the one-slot gateway it
starts both refuse every call of a round with a retry hint, and it reports their CPU."""

from __future__ import annotations

import argparse

from bench import refusals


async def test_the_refusal_benchmark_measures_refusals_only(running_stack, resilience_collection):
    args = argparse.Namespace(asks=40, runs=1, processes=2, collection=resilience_collection)
    report = await refusals.measure(running_stack, args)
    [pair] = report["rounds"]
    for side in ("floor", "ragplane"):
        got = pair[side]
        assert got["calls"] == 40
        # The held ask may end between two of ragplane's arrivals: one may then be admitted.
        assert got["refused"] >= 38, got
        assert got["with_retry_hint"] == got["refused"], got
        assert set(got["other_codes"]) <= {"OK"}, got
        assert got["cpu_ms_per_refusal"] > 0
    assert report["ratio"]["median"] > 0
