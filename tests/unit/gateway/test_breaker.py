"""The gateway's circuit breakers: a dead service is refused at once with UNAVAILABLE
(and a retry hint) after a few failed calls or health probes, and is called again as
soon as its health says SERVING or a trial call gets through."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ragplane.channels import open_channel
from ragplane.errors import Unavailable
from ragplane.gateway import breaker
from ragplane.gateway.breaker import CircuitBreaker, State
from ragplane.ops.processes import free_port

UNAVAILABLE, OK = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_open_it_and_an_answer_resets_the_count():
    b = CircuitBreaker("embedder", failures=3, clock=Clock())
    for _ in range(2):
        b.record(UNAVAILABLE, b.before_call())
    b.record(grpc.StatusCode.INVALID_ARGUMENT, b.before_call())  # it answered: it is up
    for _ in range(2):
        b.record(UNAVAILABLE, b.before_call())
    assert b.state == State.CLOSED
    b.record(UNAVAILABLE, b.before_call())
    assert b.state == State.OPEN
    with pytest.raises(Unavailable, match="embedder is unavailable") as err:
        b.before_call()
    assert err.value.retry_after and err.value.retry_after >= 1


def test_after_the_reset_time_one_trial_call_decides():
    clock = Clock()
    b = CircuitBreaker("retriever", failures=1, reset_s=5.0, clock=clock)
    b.record(UNAVAILABLE, b.before_call())
    clock.now = 5.0
    assert b.state == State.HALF_OPEN
    trial = b.before_call()
    assert trial
    with pytest.raises(Unavailable):  # one trial at a time
        b.before_call()
    b.record(UNAVAILABLE, trial)
    assert b.state == State.OPEN  # failed: open for another reset_s
    clock.now = 10.0
    b.record(OK, b.before_call())
    assert b.state == State.CLOSED


def test_health_probes_open_and_close_it():
    b = CircuitBreaker("generator", probe_failures=2, clock=Clock())
    b.probed(False, "UNAVAILABLE")
    assert b.state == State.CLOSED
    b.probed(False, "NOT_SERVING")
    assert b.open
    b.probed(True, "SERVING")
    assert b.state == State.CLOSED


async def start_health(port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server


async def test_a_dead_service_is_refused_at_once_then_called_again_when_back():
    port = free_port()
    b = CircuitBreaker("embedder", failures=2)
    # Reflection's ListServices stands in for any method of the service.
    method = "/grpc.reflection.v1alpha.ServerReflection/Nothing"
    async with open_channel(f"127.0.0.1:{port}", interceptors=breaker.interceptors(b)) as ch:
        call = ch.unary_unary(method)
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(b"", timeout=5)
            assert err.value.code() == UNAVAILABLE
        started = time.perf_counter()
        with pytest.raises(Unavailable, match="refused until it answers again"):
            await call(b"", timeout=5)
        assert time.perf_counter() - started < 0.05
        # Health checks are not guarded: the probe sees the service come back.
        server = await start_health(port)
        try:
            # As the gateway probes: every second or so, until the channel reconnects.
            give_up = time.monotonic() + 10
            while b.open and time.monotonic() < give_up:
                b.probed(*await breaker.probe(ch))
                await asyncio.sleep(0.25)
            assert b.state == State.CLOSED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED  # it answered
            assert b.state == State.CLOSED
        finally:
            await server.stop(None)
