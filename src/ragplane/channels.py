"""Every gRPC channel the project opens, opened one way: the gateway's channels to the
services behind it, and those of the CLI, the tests, the benchmarks and the evaluation."""

from __future__ import annotations

import json
from typing import Any

import grpc

from ragplane import telemetry
from ragplane.config import env_int

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Calls are spread over every address the target resolves to (a headless Kubernetes
# Service resolves to its ready pods), not sent down one connection to one of them.
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def channel_options() -> list[tuple[str, Any]]:
    """Options for clients and servers alike: message size limits (RAGPLANE_MAX_MESSAGE_BYTES)."""
    limit = env_int("RAGPLANE_MAX_MESSAGE_BYTES", MAX_MESSAGE_BYTES, minimum=1024)
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
    ]


def client_channel_options() -> list[tuple[str, Any]]:
    """channel_options and round-robin over the target's addresses. gRPC resolves the
    name again when a server ends a connection, which servers do every
    RAGPLANE_GRPC_MAX_CONNECTION_AGE_SECONDS, so new replicas get calls too."""
    return [*channel_options(), ("grpc.service_config", ROUND_ROBIN)]


def open_channel(target: str, *, service: str | None = None) -> grpc.aio.Channel:
    """An insecure channel to `target` with client_channel_options. With `service`, the
    name of the service called, each call carries the trace and is measured as a client
    call (what a service does towards another; the CLI and tests pass none)."""
    interceptors = telemetry.client_interceptors(service) if service else None
    return grpc.aio.insecure_channel(
        target, options=client_channel_options(), interceptors=interceptors
    )
