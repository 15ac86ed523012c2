"""Errors every service raises, each bound to the gRPC status a caller can act on."""

from __future__ import annotations

import grpc


class RagplaneError(Exception):
    """Base error: its message goes to the caller, its code is the gRPC status."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(RagplaneError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RagplaneError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(RagplaneError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(RagplaneError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(RagplaneError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(RagplaneError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(RagplaneError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ConfigError(Exception):
    """Bad configuration at start-up; the message names the variable."""
