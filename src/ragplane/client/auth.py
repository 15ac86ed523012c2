"""What a client sends to be let in: the API key (given, from the environment or the
local stack's state dir) as gRPC metadata or channel interceptors, and the files of a TLS
channel."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from ragplane.config import state_dir
from ragplane.keys import API_KEY_ENV, read_api_key


def api_key_for(api_key: str | None = None) -> str | None:
    """The API key to send: `api_key`, else $RAGPLANE_API_KEY, else the one `ragplane up`
    wrote to the state dir (<state>/api-key); None when there is none."""
    if api_key:
        return api_key
    if from_env := os.environ.get(API_KEY_ENV, "").strip():
        return from_env
    return read_api_key(state_dir())


def api_key_metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying `api_key`."""
    return (("authorization", f"Bearer {api_key}"),)


class _ApiKey:
    def __init__(self, api_key: str) -> None:
        self._metadata = api_key_metadata(api_key)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = [*(details.metadata or ()), *self._metadata]
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )


class _UnaryUnaryApiKey(_ApiKey, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


class _UnaryStreamApiKey(_ApiKey, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


def api_key_interceptors(api_key: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that add `authorization: Bearer <key>` to every call of a channel
    (open_channel's `interceptors`), for code that calls the gateway's stub itself. Two
    objects: grpc.aio files an interceptor under the first call kind it implements only,
    so one object implementing both would never see the streaming calls (Ask)."""
    return [_UnaryUnaryApiKey(api_key), _UnaryStreamApiKey(api_key)]


def _read_file(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()
