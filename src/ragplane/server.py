"""The gRPC server bootstrap every service shares: error mapping, health, reflection,
graceful SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from ragplane import channels, telemetry, tls
from ragplane.config import env_float, env_str
from ragplane.errors import ConfigError, InvalidArgument, RagplaneError

log = logging.getLogger(__name__)
# The metadata key of a retry hint, in seconds (HTTP's Retry-After, in gRPC trailers).
RETRY_AFTER = "retry-after"
# How often a service with required dependencies asks whether they are up.
READINESS_INTERVAL_S = 1.0


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message a caller sees for an exception; never a stack trace."""
    if isinstance(exc, RagplaneError):
        return exc.code, str(exc)
    if isinstance(exc, grpc.aio.AioRpcError):
        # A dependency's status passes through; its message already says what failed.
        return exc.code(), exc.details() or exc.code().name
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "timed out"
    incident = uuid.uuid4().hex[:12]
    log.exception("unhandled error, incident %s", incident)
    return grpc.StatusCode.INTERNAL, f"internal error (incident {incident}, see the service log)"


def retry_after_of(exc: BaseException) -> int | None:
    """Whole seconds after which a retry may succeed: the error's own hint, or the one a
    dependency sent in its trailing metadata; None without a hint."""
    seconds: float | None = getattr(exc, "retry_after", None)
    if seconds is None and isinstance(exc, grpc.aio.AioRpcError):
        for key, value in exc.trailing_metadata() or ():
            if key == RETRY_AFTER:
                try:
                    seconds = float(value)
                except (TypeError, ValueError):
                    pass
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(1, math.ceil(seconds))


class _Undecodable:
    """A request whose bytes do not parse as the method's message."""

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message = f"the request is not a valid {message_type}: {error}"


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The method's deserializer, returning _Undecodable instead of raising: gRPC would
    answer UNKNOWN for bad bytes, the handler answers INVALID_ARGUMENT."""
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    message_type = getattr(descriptor, "full_name", "request message")

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # noqa: BLE001 - DecodeError, or whatever bad bytes raise
            return _Undecodable(message_type, exc)

    return parse


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor whose wrapping depends on the method alone: each method's handler is
    wrapped once, on its first call, and reused. Wrapping on every call (a new handler,
    new closures) is a share of what a refused call costs, paid by each of a burst's
    thousand refusals (docs/reliability.md)."""

    def __init__(self) -> None:
        # Full method -> (the handler the rest of the chain gave, its wrapped twin). Only
        # methods that have a handler are kept: as many as the server serves.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, self.wrap(method, handler))
            self._wrapped[method] = cached
        return cached[1]

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class ServiceInterceptor(HandlerInterceptor):
    """Written once for every service: a SERVER span and RPC metrics per call, and
    exceptions from handlers turned into gRPC statuses with actionable messages."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        observed = _Observed(self._service, method.rsplit("/", 1)[-1], method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                observed.unary(handler.unary_unary),
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                observed.stream(handler.unary_stream),
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler


class _Observed:
    """Wraps one method's behaviour with its span, its metrics and error mapping."""

    def __init__(self, service: str, method: str, full_method: str) -> None:
        self._service = service
        self._method = method
        self._full_method = full_method.lstrip("/")
        # Health checks are left out of the access log: probes and the gateway's
        # dependency checks ask every second.
        self._logged = not self._full_method.startswith("grpc.health.")
        # The metrics' children, looked up once (a code's on its first call).
        self._requests: dict[grpc.StatusCode, Any] = {}
        self._duration = telemetry.RPC_DURATION.labels(service, method)

    def _record(self, code: grpc.StatusCode, started: float) -> None:
        elapsed = time.perf_counter() - started
        requests = self._requests.get(code)
        if requests is None:
            requests = self._requests[code] = telemetry.RPC_REQUESTS.labels(
                self._service, self._method, code.name
            )
        requests.inc()
        self._duration.observe(elapsed)
        # The access log: inside the server span, so the line carries the trace id.
        if self._logged:
            telemetry.ACCESS_LOG.write(
                code is grpc.StatusCode.RESOURCE_EXHAUSTED,
                "%s %s %.1f ms",
                self._full_method,
                code.name,
                elapsed * 1000,
            )

    @asynccontextmanager
    async def _observed(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """The call's span and metrics; an exception from the body becomes its status,
        set rather than raised (an abort costs grpc more, and a burst's refusals pay it
        a thousand times): the handler then ends, and grpc sends the status."""
        started, code = time.perf_counter(), grpc.StatusCode.OK
        with telemetry.server_span(self._full_method, context.invocation_metadata()) as span:
            try:
                yield
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                code, message = status_of(exc)
                span.set_status(trace.StatusCode.ERROR, message)
                retry_after = retry_after_of(exc)
                if retry_after:
                    context.set_trailing_metadata(((RETRY_AFTER, str(retry_after)),))
                context.set_code(code)
                context.set_details(message)
            finally:
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                self._record(code, started)

    def unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._observed(context):
                if isinstance(request, _Undecodable):
                    raise InvalidArgument(request.message)
                return await behavior(request, context)
            return None  # failed: the status is set

        return guarded

    def stream(
        self, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with self._observed(context):
                if isinstance(request, _Undecodable):
                    raise InvalidArgument(request.message)
                async for item in behavior(request, context):
                    yield item

        return guarded


def server_options() -> list[tuple[str, Any]]:
    """channel_options, and with RAGPLANE_GRPC_MAX_CONNECTION_AGE_SECONDS (0: never) the
    age at which a client connection is closed (GOAWAY), letting calls in flight finish
    within RAGPLANE_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS: clients then connect again
    and see replicas added since."""
    options = channels.channel_options()
    age = env_float("RAGPLANE_GRPC_MAX_CONNECTION_AGE_SECONDS", 0.0, minimum=0.0)
    if age > 0:
        grace = env_float("RAGPLANE_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS", 300.0, minimum=0.0)
        options += [
            ("grpc.max_connection_age_ms", int(age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(grace * 1000)),
        ]
    return options


async def serve(
    name: str,
    address: str,
    register: Callable[[grpc.aio.Server], Sequence[str]],
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ready: Callable[[], Awaitable[bool]] | None = None,
    *,
    credentials: grpc.ServerCredentials | None = None,
    public: bool = False,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> None:
    """Run a service until SIGTERM or SIGINT, then stop accepting, drain and exit.

    `register` adds the servicers and returns their full service names. `ready`, asked
    every second, says whether the dependencies the service cannot work without are up:
    health is NOT_SERVING while it says no, so Kubernetes routes calls elsewhere.
    `credentials` secure the port; without them a service's port uses the services'
    mutual TLS (RAGPLANE_TLS_*) when configured, the `public` one (the gateway's) never.
    With RAGPLANE_HEALTH_ADDR, health alone is also served in plaintext there: the
    kubelet's gRPC probes cannot speak TLS.
    """
    grace = env_float("RAGPLANE_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0)
    # `interceptors` run inside ServiceInterceptor, which maps what they raise to statuses.
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(name), *interceptors], options=server_options()
    )
    service_names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    if credentials is None and not public and (internal := tls.internal_tls()) is not None:
        credentials = internal.server_credentials()
    if credentials is not None:
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"{name}: cannot listen on {address}")
    health_server = _health_server(name, health_servicer)
    await server.start()
    if health_server is not None:
        await health_server.start()
    for service in ["", *service_names]:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s serving on %s (%s)", name, address, "TLS" if credentials else "plaintext")
    readiness = (
        asyncio.create_task(_follow_readiness(name, ready, health_servicer, service_names))
        if ready is not None
        else None
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("%s draining (grace %.0f s)", name, grace)
    if readiness is not None:
        readiness.cancel()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace)
    if health_server is not None:
        await health_server.stop(0)
    if on_shutdown is not None:
        await on_shutdown()
    telemetry.shutdown_telemetry()
    log.info("%s stopped", name)


def _health_server(name: str, servicer: health.aio.HealthServicer) -> grpc.aio.Server | None:
    """A plaintext server of grpc.health.v1 alone on RAGPLANE_HEALTH_ADDR, sharing the
    service's statuses (None when unset): it tells only SERVING or not."""
    address = env_str("RAGPLANE_HEALTH_ADDR", "")
    if not address:
        return None
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"{name}: cannot listen on {address} (RAGPLANE_HEALTH_ADDR)")
    return server


async def _follow_readiness(
    name: str,
    ready: Callable[[], Awaitable[bool]],
    health_servicer: health.aio.HealthServicer,
    service_names: Sequence[str],
) -> None:
    """Health follows `ready()`: NOT_SERVING while a required dependency is down."""
    serving = True
    while True:
        await asyncio.sleep(READINESS_INTERVAL_S)
        try:
            now = await ready()
        except Exception:  # noqa: BLE001 - a failing check means not ready
            log.exception("%s: readiness check failed", name)
            now = False
        if now == serving:
            continue
        serving = now
        status = health_pb2.HealthCheckResponse.NOT_SERVING
        if now:
            status = health_pb2.HealthCheckResponse.SERVING
        for service in ["", *service_names]:
            await health_servicer.set(service, status)
        if now:
            log.info("%s: dependencies back, SERVING", name)
        else:
            log.warning("%s: a required dependency is down, NOT_SERVING", name)


def run_service(name: str, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """A service's main(): telemetry first, then `start`; bad config exits 2 with its message."""
    telemetry.setup_telemetry(name)
    try:
        asyncio.run(start())
    except ConfigError as exc:
        log.error("%s cannot start: %s", name, exc)
        sys.exit(2)
