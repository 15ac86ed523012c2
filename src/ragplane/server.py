"""The gRPC server bootstrap every service shares: error mapping, health, reflection,
graceful SIGTERM."""

from __future__ import annotations

import asyncio
import logging
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

from ragplane import channels, telemetry
from ragplane.config import env_float
from ragplane.errors import ConfigError, RagplaneError

log = logging.getLogger(__name__)
access_log = logging.getLogger("ragplane.access")


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


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Written once for every service: a SERVER span and RPC metrics per call, and
    exceptions from handlers turned into gRPC statuses with actionable messages."""

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full_method = handler_call_details.method
        method = full_method.rsplit("/", 1)[-1]
        observed = _Observed(self._service, method, full_method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                observed.unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                observed.stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class _Observed:
    """Wraps one method's behaviour with its span, its metrics and error mapping."""

    def __init__(self, service: str, method: str, full_method: str) -> None:
        self._service = service
        self._method = method
        self._full_method = full_method.lstrip("/")

    def _record(self, code: grpc.StatusCode, started: float) -> None:
        elapsed = time.perf_counter() - started
        telemetry.RPC_REQUESTS.labels(self._service, self._method, code.name).inc()
        telemetry.RPC_DURATION.labels(self._service, self._method).observe(elapsed)
        # The access log: inside the server span, so the line carries the trace id.
        access_log.info("%s %s %.1f ms", self._full_method, code.name, elapsed * 1000)

    @asynccontextmanager
    async def _observed(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """The call's span and metrics; an exception from the body becomes its status."""
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
                await context.abort(code, message)
            finally:
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                self._record(code, started)

    def unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._observed(context):
                return await behavior(request, context)

        return guarded

    def stream(
        self, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with self._observed(context):
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
) -> None:
    """Run a service until SIGTERM or SIGINT, then stop accepting, drain and exit.

    `register` adds the servicers and returns their full service names.
    """
    grace = env_float("RAGPLANE_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0)
    server = grpc.aio.server(interceptors=[ServiceInterceptor(name)], options=server_options())
    service_names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    if server.add_insecure_port(address) == 0:
        raise OSError(f"{name}: cannot listen on {address}")
    await server.start()
    for service in ["", *service_names]:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s serving on %s", name, address)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("%s draining (grace %.0f s)", name, grace)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace)
    if on_shutdown is not None:
        await on_shutdown()
    telemetry.shutdown_telemetry()
    log.info("%s stopped", name)


def run_service(name: str, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """A service's main(): telemetry first, then `start`; bad config exits 2 with its message."""
    telemetry.setup_telemetry(name)
    try:
        asyncio.run(start())
    except ConfigError as exc:
        log.error("%s cannot start: %s", name, exc)
        sys.exit(2)
