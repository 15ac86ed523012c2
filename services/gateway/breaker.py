"""A circuit breaker per service behind the gateway: once a dependency is known dead,
calls to it fail at once with UNAVAILABLE instead of each waiting out connection
attempts and retries, and the gateway's health says NOT_SERVING (so Kubernetes routes
to a replica that can answer) until the dependency is back.

A small class rather than aiobreaker or pybreaker: what counts as a failure is a gRPC
status (UNAVAILABLE, not a caller's INVALID_ARGUMENT), a server stream fails after its
call has returned, and recovery must come from health probes too, since a gateway that
says NOT_SERVING gets no traffic to try the dependency with. aiobreaker (last release
2021) and pybreaker (asyncio only through Tornado) wrap whole function calls and would
need all three added around them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragplane.errors import Unavailable
from ragplane.gateway import metrics

log = logging.getLogger(__name__)

HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"


class State(enum.IntEnum):
    """As the breaker-state gauge reports it."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """CLOSED: calls go through; `failures` UNAVAILABLE outcomes in a row open it.
    OPEN: calls are refused at once; after `reset_s` one trial call goes through
    (HALF_OPEN), whose outcome closes or reopens it. A health probe that finds the
    service SERVING closes it; `probe_failures` failed probes in a row open it."""

    def __init__(
        self,
        service: str,
        *,
        failures: int = 5,
        probe_failures: int = 3,
        reset_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self._failures_to_open = failures
        self._probe_failures_to_open = probe_failures
        self._reset_s = reset_s
        self._clock = clock
        self._state = State.CLOSED
        self._failures = 0
        self._probe_failures = 0
        self._opened_at = 0.0
        self._why = ""
        self._trial = False
        metrics.BREAKER_STATE.labels(service).set(State.CLOSED)
        metrics.BREAKER_OPENED.labels(service)  # exported at 0 from the start

    @property
    def state(self) -> State:
        if self._state == State.OPEN and self._clock() - self._opened_at >= self._reset_s:
            return State.HALF_OPEN
        return self._state

    @property
    def open(self) -> bool:
        return self.state == State.OPEN

    def before_call(self) -> bool:
        """Raises Unavailable while open; True if this call is the half-open trial."""
        state = self.state
        if state == State.CLOSED:
            return False
        if state == State.HALF_OPEN and not self._trial:
            self._trial = True
            self._set(State.HALF_OPEN)
            return True
        wait = max(0.0, self._reset_s - (self._clock() - self._opened_at))
        raise Unavailable(
            f"the {self.service} is unavailable ({self._why}); calls to it are refused "
            f"until it answers again (next try in {wait:.0f} s)",
            retry_after=max(wait, 1.0),
        )

    def record(self, code: grpc.StatusCode | None, trial: bool) -> None:
        """The outcome of a call let through: UNAVAILABLE counts against the service,
        any answer (even an error) shows it is up; None (cancelled) shows nothing."""
        if trial:
            self._trial = False
        if code is None:
            return
        if code != grpc.StatusCode.UNAVAILABLE:
            self._failures = 0
            if self._state != State.CLOSED:
                self._close("a call succeeded")
            return
        self._failures += 1
        if trial or (self._state == State.CLOSED and self._failures >= self._failures_to_open):
            self._trip(f"{self._failures} calls in a row failed with UNAVAILABLE")

    def probed(self, serving: bool, status: str) -> None:
        """The outcome of a health probe."""
        if serving:
            self._probe_failures = 0
            if self._state != State.CLOSED:
                self._close("its health check says SERVING")
            return
        self._probe_failures += 1
        if self._state == State.OPEN:
            # Still down: no trial call until reset_s after the last failed probe.
            self._opened_at = self._clock()
        elif self._probe_failures >= self._probe_failures_to_open:
            self._trip(f"its health check says {status}")

    def _trip(self, why: str) -> None:
        was = self._state
        self._state, self._why, self._opened_at = State.OPEN, why, self._clock()
        self._set(State.OPEN)
        if was == State.CLOSED:
            metrics.BREAKER_OPENED.labels(self.service).inc()
            log.warning("circuit to the %s opened: %s", self.service, why)

    def _close(self, why: str) -> None:
        self._state, self._failures, self._probe_failures = State.CLOSED, 0, 0
        self._set(State.CLOSED)
        log.info("circuit to the %s closed: %s", self.service, why)

    def _set(self, state: State) -> None:
        metrics.BREAKER_STATE.labels(self.service).set(state)


def _code(exc: BaseException) -> grpc.StatusCode | None:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code()
    return None


def _guarded(details: grpc.aio.ClientCallDetails) -> bool:
    method = details.method
    name = method.decode() if isinstance(method, bytes) else method
    return not name.startswith(HEALTH_METHOD_PREFIX)


class BreakerUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        if not _guarded(client_call_details):
            return await continuation(client_call_details, request)
        trial = self._breaker.before_call()
        try:
            call = await continuation(client_call_details, request)
            code = await call.code()
        except asyncio.CancelledError:
            self._breaker.record(None, trial)
            raise
        except Exception as exc:
            self._breaker.record(_code(exc), trial)
            raise
        self._breaker.record(code, trial)
        return call


class BreakerStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        if not _guarded(client_call_details):
            return await continuation(client_call_details, request)
        trial = self._breaker.before_call()
        call = await continuation(client_call_details, request)
        return self._watched(call, trial)

    async def _watched(self, call, trial: bool) -> AsyncIterator:
        """The stream's messages; its end (or its error) is the call's outcome."""
        code: grpc.StatusCode | None = None
        try:
            async for message in call:
                yield message
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise
        finally:
            if code is None:  # the caller stopped reading: the call ends with it
                call.cancel()
            self._breaker.record(code, trial)


def interceptors(breaker: CircuitBreaker) -> list[grpc.aio.ClientInterceptor]:
    return [BreakerUnary(breaker), BreakerStream(breaker)]


async def probe(channel: grpc.aio.Channel, wait_s: float = 1.0) -> tuple[bool, str]:
    """(SERVING?, status name) of the service's gRPC health."""
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=wait_s
        )
    except grpc.aio.AioRpcError as exc:
        return False, exc.code().name
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status
