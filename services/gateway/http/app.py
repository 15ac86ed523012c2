"""The gateway's HTTP API: an OpenAI-compatible door (chat completions, models,
embeddings) and retrieval-only search, on its own port in the gateway's process, over
the same query pipeline as the gRPC API.

FastAPI on uvicorn: the usual Python choice for an OpenAI-compatible server (vLLM's),
with the OpenAPI document written from the same pydantic models that validate requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

from ragplane.config import env_float, env_int, env_str
from ragplane.errors import ConfigError
from ragplane.gateway.auth import Authenticator
from ragplane.gateway.clients import Backends
from ragplane.gateway.collections import Collections
from ragplane.gateway.http import errors
from ragplane.gateway.http.auth import AuditTrail
from ragplane.gateway.http.collections import CollectionServing
from ragplane.gateway.http.jobs import JobServing
from ragplane.gateway.http.middleware import BodyLimit, RequestMetrics
from ragplane.gateway.http.router import router
from ragplane.gateway.http.serving import HttpServing
from ragplane.gateway.indexing import IndexingPipeline
from ragplane.gateway.jobs import IngestJobs
from ragplane.gateway.query import QueryPipeline
from ragplane.tls import ServerTls

if TYPE_CHECKING:  # server.py imports this module
    from ragplane.gateway.server import GatewaySettings

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:50060"
DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class HttpSettings:
    address: str
    max_body_bytes: int
    # The longest a request may take, whatever X-Request-Timeout says (None: no limit
    # beyond each stage's own).
    max_timeout: float | None
    shutdown_grace: float
    # Document uploads (POST /v1/collections/{name}/documents) only.
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES

    @classmethod
    def from_env(cls) -> HttpSettings:
        address = env_str("RAGPLANE_GATEWAY_HTTP_ADDR", DEFAULT_ADDRESS)
        if not address.rpartition(":")[2].isdigit():
            raise ConfigError(f"RAGPLANE_GATEWAY_HTTP_ADDR={address!r} is not host:port")
        max_timeout = env_float("RAGPLANE_GATEWAY_HTTP_MAX_TIMEOUT_SECONDS", 300.0, minimum=0.0)
        return cls(
            address=address,
            max_body_bytes=env_int(
                "RAGPLANE_GATEWAY_HTTP_MAX_BODY_BYTES", 1024 * 1024, minimum=1024
            ),
            max_upload_bytes=env_int(
                "RAGPLANE_GATEWAY_HTTP_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES, minimum=1024
            ),
            max_timeout=max_timeout or None,
            shutdown_grace=env_float("RAGPLANE_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0.0),
        )


def create_app(
    serving: HttpServing | None,
    settings: HttpSettings | None = None,
    collections: CollectionServing | None = None,
    jobs: JobServing | None = None,
    *,
    auth: Authenticator | None = None,
) -> FastAPI:
    """The ASGI app; without `serving` it only describes itself (tools/openapi.py).
    Without `auth` every /v1 route answers 401."""
    settings = settings or HttpSettings(DEFAULT_ADDRESS, 1024 * 1024, 300.0, 10.0)
    app = FastAPI(
        title="ragplane gateway",
        version=version("ragplane"),
        summary="Answers questions from indexed documents, with citations.",
        description="OpenAI-compatible chat completions, models and embeddings, and "
        "retrieval-only search. Errors carry OpenAI's error body. docs/api.md describes "
        "every route and the gRPC API beside it.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.serving = serving
    app.state.collections = collections
    app.state.jobs = jobs
    app.state.auth = auth
    app.state.max_timeout = settings.max_timeout
    app.include_router(router)
    errors.install(app)
    # Outermost last: the span wraps everything, metrics see every status.
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, upload_max_bytes=settings.max_upload_bytes
    )
    app.add_middleware(errors.ErrorResponses)
    # Outside ErrorResponses: it logs the status every write or admin call got.
    app.add_middleware(AuditTrail)
    app.add_middleware(RequestMetrics)
    # One SERVER span per request, child of the caller's traceparent; the pipeline's
    # stage spans and the outgoing gRPC calls hang under it.
    app.add_middleware(OpenTelemetryMiddleware, exclude_spans=["receive", "send"])
    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The gRPC bootstrap (ragplane.server.serve) owns SIGTERM and stops this server.
        yield


class HttpServer:
    """uvicorn in the gateway's event loop, on a socket bound before it starts."""

    def __init__(self, app: FastAPI, settings: HttpSettings, tls: ServerTls | None = None) -> None:
        self._settings = settings
        self._tls = tls
        self._socket = _bind(settings.address)
        config = uvicorn.Config(
            app,
            log_config=None,  # the service's JSON logging
            access_log=False,  # RequestMetrics writes the access log
            lifespan="off",
            ws="none",
            server_header=False,
            timeout_graceful_shutdown=max(1, int(settings.shutdown_grace)),
            **(tls.uvicorn_options() if tls else {}),
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"the HTTP API did not start on {self._settings.address}")
            await asyncio.sleep(0.01)
        scheme = "https" if self._tls else "http"
        log.info("gateway HTTP API on %s://%s", scheme, self._settings.address)

    async def stop(self) -> None:
        """Stops accepting, lets requests in flight finish (up to the shutdown grace)."""
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task


def _bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, int(port)), family=family)
    except OSError as exc:
        raise OSError(
            f"gateway: cannot listen on {address} (RAGPLANE_GATEWAY_HTTP_ADDR): {exc}"
        ) from None


async def start_http(
    gateway: GatewaySettings,
    query: QueryPipeline,
    backends: Backends,
    jobs: IngestJobs | None = None,
    *,
    auth: Authenticator | None = None,
) -> HttpServer:
    """Starts the HTTP API beside the gRPC server, its own settings from the environment;
    stop it on shutdown."""
    settings = HttpSettings.from_env()
    serving = HttpServing(query, backends, gateway.timeouts, gateway.default_collection)
    collections = CollectionServing(
        Collections(backends, gateway.timeouts, gateway.default_collection),
        IndexingPipeline(backends, gateway.timeouts, gateway.chunk_tokens),
    )
    job_serving = JobServing(jobs) if jobs is not None else None
    server = HttpServer(
        create_app(serving, settings, collections, job_serving, auth=auth), settings, gateway.tls
    )
    await server.start()
    return server
