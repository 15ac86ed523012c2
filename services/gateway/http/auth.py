"""API keys on the HTTP API: one dependency on every /v1 route (authenticate, authorize
by the route's name in auth.HTTP_ROLES, make the key the call's caller), the streamed
answer's slot, and the audit line of every write and admin route."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragplane.errors import Unauthenticated
from ragplane.gateway import auth
from ragplane.gateway.auth import HTTP_ROLES, Authenticator, Principal

PRINCIPAL = "ragplane.principal"
# Declares the scheme in the OpenAPI document; the header is read below either way.
bearer = HTTPBearer(auto_error=False, description="An API key: `rpk_<id>_<secret>`.")


def _action(request: Request) -> str:
    return getattr(request.scope.get("route"), "name", "")


async def authorize(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The route's caller, admitted for it; 401 without a valid key, 403 below its role,
    429 over the key's rate."""
    authenticator: Authenticator | None = request.app.state.auth
    if authenticator is None:
        raise Unauthenticated("authentication is not configured on this server")
    principal = authenticator.authenticate(request.headers.get("authorization"))
    request.scope[PRINCIPAL] = principal
    auth.enter(principal)
    authenticator.authorize(principal, _action(request), HTTP_ROLES)
    return principal


def open_stream(request: Request) -> ExitStack:
    """Holds one of the caller's stream slots until the returned stack is closed; 429 when
    its key has as many streams open as allowed."""
    authenticator: Authenticator = request.app.state.auth
    principal: Principal = request.scope[PRINCIPAL]
    slot = ExitStack()
    slot.enter_context(authenticator.quotas.stream(principal.key_id, principal.tenant))
    return slot


class AuditTrail:
    """One audit line per write or admin route called by an authenticated key, with the
    HTTP status it got (refusals included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            principal = scope.get(PRINCIPAL)
            action = getattr(scope.get("route"), "name", "")
            if principal is not None and auth.audited(HTTP_ROLES, action):
                params = scope.get("path_params") or {}
                target = {
                    "collection": params.get("name", ""),
                    "doc_id": params.get("doc_id", ""),
                    "job_id": params.get("job_id", ""),
                }
                auth.record_audit(principal, action, "http", target, str(status))
