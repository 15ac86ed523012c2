"""Errors on the HTTP API: the gRPC status of an exception (ragplane.server.status_of,
the same message a gRPC caller gets) as an HTTP status and OpenAI's error body
`{"error": {"message", "type", "param", "code"}}`. Request validation errors and
Starlette's own (unknown route, wrong method, body too large) take the same shape;
nothing answers with a stack trace."""

from __future__ import annotations

import math
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragplane.errors import UnsupportedMediaType
from ragplane.gateway.http.protocol import ErrorDetail, ErrorResponse
from ragplane.server import status_of

S = grpc.StatusCode
HTTP_STATUS = {
    S.INVALID_ARGUMENT: 400,
    S.OUT_OF_RANGE: 400,
    S.UNAUTHENTICATED: 401,
    S.PERMISSION_DENIED: 403,
    S.NOT_FOUND: 404,
    # The collection was made with another embedding model than the embedder runs.
    S.FAILED_PRECONDITION: 409,
    S.ALREADY_EXISTS: 409,
    S.ABORTED: 409,
    S.RESOURCE_EXHAUSTED: 429,
    S.CANCELLED: 499,
    S.UNIMPLEMENTED: 501,
    S.UNAVAILABLE: 503,
    S.DEADLINE_EXCEEDED: 504,
}
ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    501: "not_implemented_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}
# OpenAI's clients retry 408, 409, 429 and 5xx unless told otherwise: a model mismatch or
# a missing feature does not mend itself; a full queue or a restarting service may.
RETRY = {409: "false", 501: "false", 429: "true", 503: "true"}
RETRY_AFTER_S = 1


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "server_error"


def error_response(
    status: int,
    message: str,
    code: str,
    param: str | None = None,
    retry_after: float | None = None,
) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorDetail(message=message, type=error_type(status), param=param, code=code)
    )
    headers = {}
    if status in RETRY:
        headers["x-should-retry"] = RETRY[status]
    if retry_after is None and status == 429:
        retry_after = RETRY_AFTER_S
    if retry_after is not None:
        # Whole seconds by HTTP's rule; the openai client also reads milliseconds.
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
        headers["retry-after-ms"] = str(int(retry_after * 1000))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def from_exception(exc: BaseException) -> JSONResponse:
    """The response for an exception from the pipeline, a backend or the translation; an
    unexpected one is logged with an incident id that the message names."""
    code, message = status_of(exc)
    status = HTTP_STATUS.get(code, 500)
    error_code = getattr(exc, "error_code", code.name.lower())
    if isinstance(exc, UnsupportedMediaType):
        # INVALID_ARGUMENT over gRPC; HTTP has its own status for it.
        status, error_code = 415, "unsupported_media_type"
    if code == S.DEADLINE_EXCEEDED and message in ("Deadline Exceeded", "timed out"):
        # gRPC's own words for a call whose timeout passed: say which deadlines there are.
        message = (
            "the deadline passed before the gateway was done: the request's "
            "(X-Request-Timeout, at most the server's maximum) or a stage's own limit"
        )
    return error_response(
        status,
        message,
        error_code,
        getattr(exc, "param", None),
        _retry_after(exc),
    )


def _retry_after(exc: BaseException) -> float | None:
    """When a retry may succeed: the error's own hint, or a service's, which gRPC carries
    as `retry-after` trailing metadata."""
    hint = getattr(exc, "retry_after", None)
    if hint is None and isinstance(exc, grpc.aio.AioRpcError):
        for key, value in exc.trailing_metadata() or ():
            if key == "retry-after":
                try:
                    hint = float(value)
                except (TypeError, ValueError):
                    pass
    return hint


def stream_error(exc: BaseException) -> str:
    """The error event of a stream that already answered 200: OpenAI's clients raise
    APIError on a `data:` event whose object has an `error`."""
    return bytes(from_exception(exc).body).decode()


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(e) for e in exc.errors()]
    message = "; ".join(text for _, text in problems[:5])
    return error_response(400, message, "invalid_argument", problems[0][0] if problems else None)


def _problem(error: dict[str, Any]) -> tuple[str | None, str]:
    """(param, message) of one pydantic error: `messages.0.content: Field required`."""
    loc = [str(part) for part in error.get("loc", ()) if not _union_member(part)]
    if loc and loc[0] in ("body", "query", "header", "path"):
        loc = loc[1:]
    if error.get("type") == "json_invalid":
        detail = (error.get("ctx") or {}).get("error", "")
        return None, f"the request body is not valid JSON: {detail}".rstrip(": ")
    if not loc:
        if error.get("type") == "missing":
            return None, "the request body is missing: send a JSON object"
        return None, f"the request body: {error.get('msg', 'is invalid')}"
    param = ".".join(loc)
    return param, f"{param}: {error.get('msg', 'is invalid')}"


def _union_member(part: object) -> bool:
    """pydantic names the member of a union that failed (`content.str`,
    `rerank.RerankOptions`); a field name is snake_case, so these are told apart."""
    return isinstance(part, str) and (
        part in ("str", "int", "float", "bool") or "[" in part or part[:1].isupper()
    )


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(exc.status_code, message, codes.get(exc.status_code, "invalid_request"))


def install(app: FastAPI) -> None:
    """Handlers for the errors FastAPI and Starlette raise themselves."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)


class ErrorResponses:
    """Every other exception a route lets out becomes its status and error body, here
    rather than in Starlette's 500 page; after a stream has started, the route itself
    sends the error as an event (stream_error)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            if started:
                raise
            await from_exception(exc)(scope, receive, send)
