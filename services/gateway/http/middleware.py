"""ASGI middleware of the HTTP API: the request body limit, and per-request metrics and
access log lines labelled by route template."""

from __future__ import annotations

import asyncio
import time

from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragplane import telemetry
from ragplane.gateway import metrics
from ragplane.gateway.http.errors import error_response


class BodyLimit:
    """Refuses a request body over `max_bytes` (a document upload's: `upload_max_bytes`)
    with 413: at once when Content-Length says so, else as soon as the bytes received
    pass it."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int = 0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = upload_max_bytes or max_bytes

    def _message(self, limit: int) -> str:
        return f"the request body is over {limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_max_bytes if _is_upload(scope) else self.max_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await error_response(413, self._message(limit), "request_too_large")(
                scope, receive, send
            )
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI lets an HTTPException from reading the body through to
                    # the exception handlers (errors.py).
                    raise HTTPException(413, self._message(limit))
            return message

        await self.app(scope, limited, send)


def _is_upload(scope: Scope) -> bool:
    """POST /v1/collections/{name}/documents and the ingestion jobs' documents
    (/v1/collections/{name}/jobs[/upload], /v1/jobs/{id}/documents): files, under their
    own limit."""
    parts = scope["path"].strip("/").split("/")
    if scope["method"] != "POST":
        return False
    if parts[:2] == ["v1", "jobs"]:
        return len(parts) == 4 and parts[3] == "documents"
    return parts[:2] == ["v1", "collections"] and (
        (len(parts) == 4 and parts[3] in ("documents", "jobs"))
        or (len(parts) == 5 and parts[3:] == ["jobs", "upload"])
    )


class RequestMetrics:
    """ragplane_http_requests_total{route,method,status} and
    ragplane_http_request_duration_seconds{route}, to the last byte of a streamed answer,
    and one access log line per request (inside its span, so it carries the trace id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = route_of(scope)
            metrics.HTTP_REQUESTS.labels(route, scope["method"], str(status)).inc()
            metrics.HTTP_REQUEST_DURATION.labels(route).observe(elapsed)
            telemetry.ACCESS_LOG.write(
                status == 429, "%s %s %d %.1f ms", scope["method"], route, status, elapsed * 1000
            )


def route_of(scope: Scope) -> str:
    """The route template, not the path, so that labels stay few; "unmatched" for paths
    no route serves. Found again when a request was refused before routing (413)."""
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        for candidate in getattr(app, "routes", ()):
            if candidate.matches(scope)[0] == Match.FULL:
                route = candidate
                break
    return getattr(route, "path", "unmatched")
