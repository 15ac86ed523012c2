"""The gRPC server bootstrap every service shares: error mapping, health, reflection,
graceful SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ragplane.config import env_float, env_int
from ragplane.errors import RagplaneError

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


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


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns exceptions from handlers into gRPC statuses with actionable messages."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _guard_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _guard_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    code, message = status_of(exc)
    await context.abort(code, message)


def _guard_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            await _abort(context, exc)

    return guarded


def _guard_stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in behavior(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            await _abort(context, exc)

    return guarded


def channel_options() -> list[tuple[str, Any]]:
    """Options for clients and servers alike: message size limits."""
    limit = env_int("RAGPLANE_MAX_MESSAGE_BYTES", MAX_MESSAGE_BYTES, minimum=1024)
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
    ]


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
    server = grpc.aio.server(interceptors=[ErrorInterceptor()], options=channel_options())
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
    log.info("%s stopped", name)


def setup_logging(name: str) -> None:
    level = logging.getLevelName(__import__("os").environ.get("RAGPLANE_LOG_LEVEL", "INFO").upper())
    logging.basicConfig(
        level=level if isinstance(level, int) else logging.INFO,
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )
