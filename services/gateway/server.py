"""Gateway service: the public API, running the indexing and query pipelines."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from ragplane.config import (
    DEFAULT_PORTS,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_str,
    listen_address,
)
from ragplane.gateway.admission import Admission, AdmissionSettings
from ragplane.gateway.auth import Authenticator, AuthSettings, GrpcAuthInterceptor
from ragplane.gateway.clients import Backends, Timeouts
from ragplane.gateway.collections import Collections
from ragplane.gateway.grpc_api import GatewayServicer
from ragplane.gateway.http.app import start_http
from ragplane.gateway.indexing import IndexingPipeline
from ragplane.gateway.jobs import open_jobs
from ragplane.gateway.query import (
    DEFAULT_TOP_K,
    MAX_TOP_K,
    SEARCH_MODES,
    QueryPipeline,
    QuerySettings,
)
from ragplane.gateway.quotas import Quotas, QuotaSettings
from ragplane.server import run_service, serve
from ragplane.tls import ServerTls, public_tls
from ragplane.v1 import gateway_pb2, gateway_pb2_grpc


@dataclass(frozen=True)
class GatewaySettings:
    address: str
    embedder_target: str
    retriever_target: str
    generator_target: str
    default_collection: str
    chunk_tokens: int
    timeouts: Timeouts
    query: QuerySettings
    admission: AdmissionSettings
    # TLS of the public gRPC and HTTP ports (RAGPLANE_GATEWAY_TLS_*); None: plaintext.
    tls: ServerTls | None = None
    # API keys (RAGPLANE_GATEWAY_API_KEYS_FILE) and their quotas; no keys: auth disabled.
    auth: AuthSettings = AuthSettings(None)
    quotas: QuotaSettings = QuotaSettings()

    @classmethod
    def from_env(cls) -> GatewaySettings:
        def target(service: str) -> str:
            return env_str(
                f"RAGPLANE_GATEWAY_{service.upper()}_TARGET", f"127.0.0.1:{DEFAULT_PORTS[service]}"
            )

        return cls(
            address=listen_address("gateway"),
            embedder_target=target("embedder"),
            retriever_target=target("retriever"),
            generator_target=target("generator"),
            default_collection=env_str("RAGPLANE_GATEWAY_COLLECTION", "default"),
            chunk_tokens=env_int("RAGPLANE_GATEWAY_CHUNK_TOKENS", 200, minimum=32),
            # Caps on each stage: a call gets what its caller has left, at most these.
            # Generous, so that the caller's deadline rules (a stage waiting behind a
            # burst is not cut at a fixed 30 s while its caller allows 300).
            timeouts=Timeouts(
                embed=env_float("RAGPLANE_GATEWAY_EMBED_TIMEOUT_SECONDS", 600.0, minimum=0.1),
                retrieve=env_float("RAGPLANE_GATEWAY_RETRIEVE_TIMEOUT_SECONDS", 600.0, minimum=0.1),
                generate=env_float("RAGPLANE_GATEWAY_GENERATE_TIMEOUT_SECONDS", 600.0, minimum=0.1),
            ),
            query=QuerySettings(
                top_k=env_int(
                    "RAGPLANE_GATEWAY_TOP_K", DEFAULT_TOP_K, minimum=1, maximum=MAX_TOP_K
                ),
                max_tokens=env_int("RAGPLANE_GATEWAY_MAX_TOKENS", 256, minimum=1),
                mode=env_choice("RAGPLANE_GATEWAY_SEARCH_MODE", "hybrid", tuple(SEARCH_MODES)),  # type: ignore[arg-type]
                # The highest threshold that turned away no answerable question of
                # either evaluation set (docs/retrieval.md).
                min_relevance=env_float("RAGPLANE_GATEWAY_MIN_RELEVANCE", 0.35),
                check_names=env_bool("RAGPLANE_GATEWAY_CHECK_NAMES", True),
                attribute_citations=env_bool("RAGPLANE_GATEWAY_ATTRIBUTE_CITATIONS", True),
            ),
            admission=AdmissionSettings(
                max_in_flight=env_int("RAGPLANE_GATEWAY_MAX_ASKS_IN_FLIGHT", 4, minimum=1),
                max_queued=env_int("RAGPLANE_GATEWAY_MAX_QUEUED_ASKS", 2048, minimum=0),
                initial_service_s=env_float(
                    "RAGPLANE_GATEWAY_ASK_SERVICE_SECONDS", 5.0, minimum=0.001
                ),
            ),
            tls=public_tls(),
            auth=AuthSettings.from_env(),
            quotas=QuotaSettings.from_env(),
        )


async def run(settings: GatewaySettings) -> None:
    # Who may call (auth.py) and how much (quotas.py): both doors, one key store.
    quotas = Quotas(settings.quotas)
    authenticator = Authenticator.from_settings(settings.auth, quotas)
    backends = Backends(
        settings.embedder_target, settings.retriever_target, settings.generator_target, quotas
    )
    indexing = IndexingPipeline(backends, settings.timeouts, settings.chunk_tokens)
    query = QueryPipeline(
        backends,
        settings.timeouts,
        settings.query,
        settings.default_collection,
        Admission(settings.admission),
    )
    # Ingestion jobs (jobs.py), in the database every replica shares.
    jobs = await open_jobs(
        indexing, Collections(backends, settings.timeouts, settings.default_collection)
    )
    servicer = GatewayServicer(
        indexing, query, backends, settings.timeouts, settings.default_collection, jobs
    )

    def register(server: grpc.aio.Server) -> list[str]:
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
        return [gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name]

    # The HTTP API (http/app.py): its own port, the same pipeline; stopped after the gRPC
    # server has drained, before the channels close.
    http = await start_http(settings, query, backends, jobs, auth=authenticator)

    async def shutdown() -> None:
        await http.stop()
        # A job in flight goes back to the queue for another replica to resume.
        await jobs.close()
        await backends.close()

    jobs.start()

    # Health is NOT_SERVING while a service behind the gateway is known down.
    backends.start_probes()
    await serve(
        "gateway",
        settings.address,
        register,
        on_shutdown=shutdown,
        ready=backends.ready,
        credentials=settings.tls.grpc_credentials() if settings.tls else None,
        public=True,
        interceptors=[GrpcAuthInterceptor(authenticator)],
    )


def main() -> None:
    run_service("gateway", lambda: run(GatewaySettings.from_env()))


if __name__ == "__main__":
    main()
