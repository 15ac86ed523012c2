"""GatewayError, the one error both transports raise, and how a failed gRPC call or an
HTTP error response becomes one."""

from __future__ import annotations

import json
from typing import Any

import grpc


class GatewayError(Exception):
    """A call the gateway refused or could not be reached for. `code` is a gRPC status
    name on both transports (NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE, ...); over HTTP
    `http_status` is the response's status. `unreachable` means no gateway answered at
    all (connection refused, unknown host), not that one of its dependencies is down."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        unreachable: bool = False,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
        self.unreachable = unreachable


def error_from_rpc(exc: grpc.aio.AioRpcError, *, connected: bool = True) -> GatewayError:
    """A failed call's status as a GatewayError; `connected` False marks UNAVAILABLE as
    no gateway reached."""
    code = exc.code()
    return GatewayError(
        code.name,
        exc.details() or code.name,
        unreachable=code == grpc.StatusCode.UNAVAILABLE and not connected,
    )


GRPC_CODES = frozenset(c.name for c in grpc.StatusCode)
# The gRPC status behind an HTTP status, as the gateway's HTTP routes map them.
HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "FAILED_PRECONDITION",
    412: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED",
    # A document of a type ragplane cannot read (INVALID_ARGUMENT over gRPC).
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_from_http(status: int, body: str) -> GatewayError:
    """An HTTP error response (`{"error": {"message", "type", "code"}}`) as a
    GatewayError: the body's code when it is a gRPC status name, else one for the status."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        error = {"message": body.strip() or f"HTTP {status}"}
    fallback = HTTP_CODES.get(status, "INTERNAL" if status >= 500 else "UNKNOWN")
    return error_from_json(error, fallback, http_status=status)


def error_from_json(
    error: dict[str, Any], fallback: str, *, http_status: int | None = None
) -> GatewayError:
    named = str(error.get("code") or "").upper()
    return GatewayError(
        named if named in GRPC_CODES else fallback,
        str(error.get("message") or fallback),
        http_status=http_status,
    )
