"""Errors every service raises, each bound to the gRPC status a caller can act on."""

from __future__ import annotations

import grpc


class RagplaneError(Exception):
    """Base error: its message goes to the caller, its code is the gRPC status."""

    code = grpc.StatusCode.INTERNAL
    # Seconds after which a retry may succeed, sent as `retry-after` (gRPC trailing
    # metadata, HTTP header); None: no hint.
    retry_after: float | None = None


class InvalidArgument(RagplaneError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class UnsupportedMediaType(InvalidArgument):
    """A document of a type ragplane does not read (INVALID_ARGUMENT; HTTP 415)."""


class Unauthenticated(RagplaneError):
    """No API key, or one that is not (or no longer) valid (HTTP 401)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(RagplaneError):
    """The key's role does not allow the call (HTTP 403)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(RagplaneError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(RagplaneError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(RagplaneError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(RagplaneError):
    """A queue is full, or the queue ahead would outlast the caller's deadline."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(RagplaneError):
    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(RagplaneError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ConfigError(Exception):
    """Bad configuration at start-up; the message names the variable."""
