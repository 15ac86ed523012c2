"""Who is calling, and may they: API keys on both doors, roles per action, the caller
carried to the code below (tenancy.py namespaces by it, quotas.py counts by it).

Every public call sends `authorization: Bearer <key>` (gRPC metadata or HTTP header).
The key file (ragplane.keys: hashes only) is read again when it changes, which also
follows a Kubernetes Secret's symlink swap. No key, a malformed, unknown or revoked one:
UNAUTHENTICATED (401), the same words for each, nothing about which keys exist. A role
below the action's: PERMISSION_DENIED (403). Health, reflection and metrics are not the
GatewayService and stay open.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ragplane import keys
from ragplane.config import env_choice, env_str
from ragplane.errors import ConfigError, PermissionDenied, RagplaneError, Unauthenticated
from ragplane.gateway import audit, metrics
from ragplane.gateway.quotas import Quotas
from ragplane.keys import KeyRecord, Role
from ragplane.server import HandlerInterceptor

log = logging.getLogger(__name__)

GATEWAY_SERVICE = "ragplane.v1.GatewayService"
# How often the keys file is looked at (one stat) for a change.
RELOAD_INTERVAL_S = 1.0
# The role each action needs: gRPC methods and HTTP route names (the handler's). An
# action missing here needs ADMIN: a new RPC or route is closed until it is given a role.
GRPC_ROLES: dict[str, Role] = {
    "Ask": Role.READER,
    "AskUnary": Role.READER,
    "Search": Role.READER,
    "ListCollections": Role.READER,
    "DescribeCollection": Role.READER,
    "ListDocuments": Role.READER,
    "GetDocument": Role.READER,
    "Ingest": Role.WRITER,
    "DeleteDocument": Role.WRITER,
    "UpdateDocument": Role.WRITER,
    "CreateIngestJob": Role.WRITER,
    "AddIngestJobDocuments": Role.WRITER,
    "GetIngestJob": Role.WRITER,
    "ListIngestJobs": Role.WRITER,
    "CancelIngestJob": Role.WRITER,
    "CreateCollection": Role.ADMIN,
    "DropCollection": Role.ADMIN,
}
HTTP_ROLES: dict[str, Role] = {
    "chat_completions": Role.READER,
    "list_models": Role.READER,
    "create_embeddings": Role.READER,
    "search": Role.READER,
    "list_collections": Role.READER,
    "describe_collection": Role.READER,
    "list_documents": Role.READER,
    "get_document": Role.READER,
    "upload_documents": Role.WRITER,
    "update_document": Role.WRITER,
    "delete_document": Role.WRITER,
    "create_job": Role.WRITER,
    "upload_job": Role.WRITER,
    "add_job_documents": Role.WRITER,
    "list_jobs": Role.WRITER,
    "get_job": Role.WRITER,
    "cancel_job": Role.WRITER,
    "create_collection": Role.ADMIN,
    "drop_collection": Role.ADMIN,
}
# Reads that need the writer role (jobs are a writer's), not audited.
UNAUDITED = {"GetIngestJob", "ListIngestJobs", "list_jobs", "get_job"}
MISSING = "missing API key: send `authorization: Bearer <key>` (ragplane keys create makes one)"
INVALID = "the API key is not valid"
# Compared against when a key id is unknown, so an unknown id takes as long as a wrong
# secret (no timing tells which ids exist).
_DECOY = keys.new_key(keys.LOCAL_TENANT, Role.READER)[1]


@dataclass(frozen=True)
class Principal:
    """The caller: its key's id, tenant and role (None: background work for a tenant)."""

    key_id: str
    tenant: str
    role: Role | None


# Each call is its own task (grpc.aio, uvicorn), so a value set at its start is its own.
_principal: ContextVar[Principal | None] = ContextVar("ragplane_principal", default=None)


def current_principal() -> Principal:
    """The caller of the call being served; refuses where there is none, so that nothing
    reaches tenant data without one."""
    principal = _principal.get()
    if principal is None:
        raise PermissionDenied("no authenticated caller for this call")
    return principal


def caller_tenant() -> str:
    """The caller's tenant, "" where there is none (admission's queue key)."""
    principal = _principal.get()
    return principal.tenant if principal is not None else ""


def enter(principal: Principal) -> None:
    """Makes `principal` the caller for the rest of this task."""
    _principal.set(principal)


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    token = _principal.set(principal)
    try:
        yield
    finally:
        _principal.reset(token)


def required_role(roles: Mapping[str, Role], action: str) -> Role:
    return roles.get(action, Role.ADMIN)


class KeyStore:
    """The keys file, read again (at most once a RELOAD_INTERVAL_S) when its inode, size
    or mtime changed; a file that no longer parses keeps the keys read before."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        try:
            self._signature = self._stat()
            self._keys = {r.id: r for r in keys.read_keys(path)}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"RAGPLANE_GATEWAY_API_KEYS_FILE={path}: {exc}") from None
        self._checked = clock()

    def _stat(self) -> tuple[int, int, int, int]:
        # os.stat follows symlinks: a Secret's `..data` swap changes the inode.
        st = os.stat(self.path)
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < RELOAD_INTERVAL_S:
            return
        self._checked = now
        try:
            signature = self._stat()
            if signature == self._signature:
                return
            loaded = {r.id: r for r in keys.read_keys(self.path)}
        except (OSError, ValueError) as exc:
            log.error("keys file %s unreadable, keeping the keys read before: %s", self.path, exc)
            return
        self._signature, self._keys = signature, loaded
        log.info("keys file %s reloaded: %d keys", self.path, len(loaded))

    def lookup(self, key: str) -> KeyRecord | None:
        """The record of a valid, unrevoked key; None for anything else."""
        self._refresh()
        parsed = keys.parse_key(key)
        key_id, secret = parsed if parsed else ("", key)
        record = self._keys.get(key_id)
        matches = (record or _DECOY).matches(secret)
        if record is None or not matches or record.revoked is not None:
            return None
        return record


@dataclass(frozen=True)
class AuthSettings:
    keys_file: Path | None  # None: authentication disabled (explicitly)

    @classmethod
    def from_env(cls) -> AuthSettings:
        mode = env_choice("RAGPLANE_GATEWAY_AUTH", "enabled", ("enabled", "disabled"))
        keys_file = env_str("RAGPLANE_GATEWAY_API_KEYS_FILE", "")
        if mode == "disabled":
            return cls(None)
        if not keys_file:
            raise ConfigError(
                "RAGPLANE_GATEWAY_API_KEYS_FILE is not set: name the API keys file "
                "(`ragplane keys create` writes one), or set RAGPLANE_GATEWAY_AUTH=disabled "
                "to serve every caller as the local tenant's admin"
            )
        return cls(Path(keys_file))


class Authenticator:
    """Turns a call's authorization value into its Principal, and admits it for one action
    (role, then the key's rate)."""

    def __init__(self, store: KeyStore | None, quotas: Quotas) -> None:
        self._store = store
        self.quotas = quotas

    @classmethod
    def from_settings(cls, settings: AuthSettings, quotas: Quotas) -> Authenticator:
        if settings.keys_file is None:
            log.warning("RAGPLANE_GATEWAY_AUTH=disabled: every caller is the local admin")
            return cls(None, quotas)
        return cls(KeyStore(settings.keys_file), quotas)

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller's Principal; UNAUTHENTICATED without a valid key."""
        if self._store is None:
            return Principal("", keys.LOCAL_TENANT, Role.ADMIN)
        scheme, _, key = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            metrics.AUTH_REFUSALS.labels("missing").inc()
            raise Unauthenticated(MISSING)
        record = self._store.lookup(key.strip())
        if record is None:
            metrics.AUTH_REFUSALS.labels("invalid").inc()
            raise Unauthenticated(INVALID)
        return Principal(record.id, record.tenant, Role.parse(record.role))

    def authorize(self, principal: Principal, action: str, roles: Mapping[str, Role]) -> None:
        """PERMISSION_DENIED below the action's role; RESOURCE_EXHAUSTED over the rate."""
        required = required_role(roles, action)
        if principal.role is None or principal.role < required:
            metrics.AUTH_REFUSALS.labels("role").inc()
            have = principal.role.label if principal.role else "none"
            raise PermissionDenied(
                f"{action} needs the {required.label} role; this API key's role is {have}"
            )
        self.quotas.admit_request(principal.key_id, principal.tenant)
        metrics.TENANT_REQUESTS.labels(metrics.tenant_label(principal.tenant)).inc()


def audited(roles: Mapping[str, Role], action: str) -> bool:
    """Writes and admin actions are audited; reads are not."""
    return required_role(roles, action) >= Role.WRITER and action not in UNAUDITED


def record_audit(
    principal: Principal, action: str, transport: str, target: dict[str, str], result: str
) -> None:
    audit.record(
        key_id=principal.key_id,
        tenant=principal.tenant,
        role=principal.role.label if principal.role else "",
        action=action,
        transport=transport,
        target=target,
        result=result,
    )


def result_of(exc: BaseException | None) -> str:
    """A call's outcome as a gRPC status name, for the audit log."""
    if exc is None:
        return "OK"
    if isinstance(exc, RagplaneError):
        return exc.code.name
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    if isinstance(exc, TimeoutError):
        return "DEADLINE_EXCEEDED"
    return "INTERNAL"


def _target(request: Any) -> dict[str, str]:
    """What a request names, for the audit log (collection, doc id, documents)."""
    target: dict[str, str] = {}
    fields = getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", {})
    for name in ("collection", "name", "doc_id", "job_id"):
        if name in fields:
            target[name] = str(getattr(request, name))
    if "documents" in fields:
        target["documents"] = str(len(request.documents))
    return target


class GrpcAuthInterceptor(HandlerInterceptor):
    """Authenticates and authorizes every GatewayService call before its handler runs
    (inside ServiceInterceptor, which maps the refusals to statuses); other services on
    the port (health, reflection) pass. Streams hold one of the key's stream slots."""

    def __init__(self, auth: Authenticator) -> None:
        super().__init__()
        self._auth = auth
        self._prefix = f"/{GATEWAY_SERVICE}/"

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if not method.startswith(self._prefix):
            return handler
        action = method[len(self._prefix) :]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(action, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(action, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # Client-streaming methods: none in GatewayService; closed until they are handled.
        return grpc.unary_unary_rpc_method_handler(self._refuse)

    async def _refuse(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served with authentication")

    def _admit(self, action: str, request: Any, context: grpc.aio.ServicerContext) -> Principal:
        metadata = dict(context.invocation_metadata() or ())
        principal = self._auth.authenticate(metadata.get("authorization"))
        enter(principal)
        try:
            self._auth.authorize(principal, action, GRPC_ROLES)
        except RagplaneError as exc:
            self._audit(principal, action, request, exc)
            raise
        return principal

    def _audit(
        self, principal: Principal, action: str, request: Any, exc: BaseException | None
    ) -> None:
        if audited(GRPC_ROLES, action):
            record_audit(principal, action, "grpc", _target(request), result_of(exc))

    def _unary(self, action: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = self._admit(action, request, context)
            try:
                reply = await behavior(request, context)
            except BaseException as exc:
                self._audit(principal, action, request, exc)
                raise
            self._audit(principal, action, request, None)
            return reply

        return guarded

    def _stream(self, action: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            principal = self._admit(action, request, context)
            try:
                with self._auth.quotas.stream(principal.key_id, principal.tenant):
                    async for item in behavior(request, context):
                        yield item
            except BaseException as exc:
                self._audit(principal, action, request, exc)
                raise
            self._audit(principal, action, request, None)

        return guarded
