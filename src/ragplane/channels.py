"""Every gRPC channel the project opens, opened one way: the gateway's channels to the
services behind it, and those of the CLI, the tests, the benchmarks and the evaluation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

from ragplane import telemetry, tls
from ragplane.config import env_int

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Calls are spread over every address the target resolves to (a headless Kubernetes
# Service resolves to its ready pods), not sent down one connection to one of them.
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
# gRPC's own retries for the idempotent methods a caller names: a call that fails with
# UNAVAILABLE (a restarting replica, a connection reset) is sent again after an
# exponential backoff that gRPC jitters (a random delay up to the current backoff),
# never past the call's deadline. Throttling stops retrying altogether while most calls
# fail (a dead dependency), so retries do not multiply the load of an outage.
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
RETRY_THROTTLING = {"maxTokens": 10, "tokenRatio": 0.1}
# A restarted server is found again within about 2 s, not after gRPC's default
# reconnect backoff, which grows to 2 minutes.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def service_config(retried: Sequence[str] = ()) -> str:
    """Round robin, and RETRY_POLICY for `retried`: full method names
    ("ragplane.v1.EmbedderService/Embed")."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retried:
        names = []
        for method in retried:
            service, _, name = method.partition("/")
            names.append({"service": service, "method": name})
        config["methodConfig"] = [{"name": names, "retryPolicy": RETRY_POLICY}]
        config["retryThrottling"] = RETRY_THROTTLING
    return json.dumps(config)


def channel_options() -> list[tuple[str, Any]]:
    """Options for clients and servers alike: message size limits (RAGPLANE_MAX_MESSAGE_BYTES)."""
    limit = env_int("RAGPLANE_MAX_MESSAGE_BYTES", MAX_MESSAGE_BYTES, minimum=1024)
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
    ]


def client_channel_options(retried: Sequence[str] = ()) -> list[tuple[str, Any]]:
    """channel_options, a quick reconnect, round-robin over the target's addresses and
    retries of the `retried` methods (service_config). gRPC resolves the name again
    when a server ends a connection, which servers do every
    RAGPLANE_GRPC_MAX_CONNECTION_AGE_SECONDS, so new replicas get calls too."""
    return [
        *channel_options(),
        *RECONNECT_OPTIONS,
        ("grpc.service_config", service_config(retried)),
    ]


def open_channel(
    target: str,
    *,
    service: str | None = None,
    retried: Sequence[str] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """A channel to `target` with client_channel_options. With `service`, the name of the
    service called, each call carries the trace and is measured as a client call (what a
    service does towards another; the CLI and tests pass none), over the services' mutual
    TLS when RAGPLANE_TLS_* configure it. `retried` names the idempotent methods gRPC
    retries; `interceptors` run outside the telemetry (the gateway's circuit breakers);
    `credentials` make it a TLS channel (to the gateway's public port, say)."""
    chain = [*interceptors, *(telemetry.client_interceptors(service) if service else [])]
    options = client_channel_options(retried)
    if credentials is None and service and (internal := tls.internal_tls()) is not None:
        credentials = internal.channel_credentials()
        options += internal.channel_options()
    if credentials is not None:
        return grpc.aio.secure_channel(
            target, credentials, options=options, interceptors=chain or None
        )
    return grpc.aio.insecure_channel(target, options=options, interceptors=chain or None)
