"""A burst of concurrent Ask streams, scaled to the suite (bench/burst.py runs 1,000):
every call is answered, or refused before any work with a retry hint; none is worked on
and then dropped at its deadline; nothing fails INTERNAL; the gateway's memory stays
bounded and it still serves afterwards."""

from __future__ import annotations

import asyncio

from bench.burst import ask_once, burst, open_channels
from bench.harness import metric_samples
from ragplane.ops import processes, stack

BURST = 60
DEADLINE_S = 180.0
MAX_TOKENS = 16
# The gateway holds each waiting call's request and stream: a few KiB each.
MEMORY_GROWTH_MIB = 64


async def gateway_metric(layout: stack.StackLayout, name: str) -> float:
    samples = await metric_samples(layout, "gateway")
    assert name in samples, f"{name} not exported"
    return samples[name]


async def test_a_burst_is_answered_or_refused_early_with_a_retry_hint(
    running_stack, resilience_collection
):
    layout = running_stack
    limit = int(await gateway_metric(layout, "ragplane_gateway_asks_in_flight_limit"))
    channels = open_channels(layout.address("gateway"), 4)
    try:
        # Two rounds at saturation first: admission control's service-time estimate is
        # then measured under load, as it is on a gateway that has been serving.
        warm = await asyncio.gather(
            *(
                ask_once(gw, 600, MAX_TOKENS, resilience_collection)
                for gw in [_stub(channels[i % 4]) for i in range(2 * limit)]
            )
        )
        assert {o.code for o in warm} == {"OK"}, [o for o in warm if o.code != "OK"]
        result = await burst(
            channels,
            BURST,
            DEADLINE_S,
            MAX_TOKENS,
            resilience_collection,
            stack.running_pid(layout, "gateway"),
        )
    finally:
        for channel in channels:
            await channel.close()
    codes = {o.code for o in result.outcomes}
    assert codes <= {"OK", "RESOURCE_EXHAUSTED"}, result.summary()
    assert result.answered >= 1, result.summary()
    assert result.deadline_after_work == 0
    refused = result.refused
    assert all(not o.worked and o.retry_after and o.retry_after >= 1 for o in refused)
    # Most are refused on arrival; a few may be later, when the estimate rises and the
    # queue ahead of them would outlast their deadline, still before any work.
    assert sum(o.seconds <= 1.0 for o in refused) >= 0.8 * len(refused), result.summary()
    assert result.wall_s < DEADLINE_S + 5
    growth = result.gateway_peak_rss_mib - result.gateway_rss_before_mib
    assert growth < MEMORY_GROWTH_MIB, result.summary()
    assert await processes.serving(layout.address("gateway"))
    assert await gateway_metric(layout, "ragplane_gateway_asks_queued") == 0
    assert await gateway_metric(layout, "ragplane_gateway_asks_in_flight") == 0


def _stub(channel):
    from ragplane.v1 import gateway_pb2_grpc

    return gateway_pb2_grpc.GatewayServiceStub(channel)
