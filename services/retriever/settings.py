"""The retriever's settings, from environment variables, checked at start-up."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ragplane.config import env_bool, env_choice, env_float, env_int, env_str, listen_address
from ragplane.errors import ConfigError
from ragplane.retriever.rerank import RerankerSettings
from ragplane.retriever.store import RRF_K, Fusion

# Dense search's weight in the fusion of plain-language queries: 1, dense search's order
# (docs/retrieval.md, "Query-adaptive fusion": only this weight was measured on PostgreSQL).
PLAIN_DENSE_WEIGHT = 1.0


@dataclass(frozen=True)
class RetrieverSettings:
    address: str
    milvus_uri: str
    milvus_token: str
    milvus_timeout_s: float
    reranker: RerankerSettings
    # Hybrid fusion for requests that do not choose one.
    fusion: Fusion
    # How long a search may trust the collection's model as last read (0: every time).
    model_cache_s: float
    # Milvus Lite only: rows written to a collection between flushes (0: never flush),
    # and how long its writes stay idle before the rest is flushed (0: not then).
    flush_rows: int
    flush_idle_s: float = 2.0
    # Whether keyword and hybrid searches rank chunks naming the query's identifiers
    # first, for requests that do not choose.
    identifier_boost: bool = True
    # Hybrid fusion for requests that do not choose one and whose query names no exact
    # identifier (ragplane.names.exact_terms); None: `fusion` for every query.
    plain_fusion: Fusion | None = None

    @classmethod
    def from_env(cls) -> RetrieverSettings:
        uri = env_str("RAGPLANE_MILVUS_URI", "http://127.0.0.1:19530")
        if not uri.startswith(("http://", "https://", "tcp://", "grpc://")):
            raise ConfigError(
                f"RAGPLANE_MILVUS_URI={uri!r} must be a server URI such as "
                "http://127.0.0.1:19530 (run Milvus Lite as a server, not a .db path)"
            )
        fusion = Fusion(
            env_choice("RAGPLANE_FUSION", "rrf", ("rrf", "weighted")),
            rrf_k=env_int("RAGPLANE_FUSION_RRF_K", RRF_K, minimum=1, maximum=16384),
            dense_weight=env_float("RAGPLANE_FUSION_DENSE_WEIGHT", 0.5, minimum=0.0),
            keyword_weight=env_float("RAGPLANE_FUSION_KEYWORD_WEIGHT", 0.5, minimum=0.0),
            depth_factor=env_int("RAGPLANE_FUSION_DEPTH_FACTOR", 3, minimum=1, maximum=20),
            min_depth=env_int("RAGPLANE_FUSION_MIN_DEPTH", 20, minimum=1, maximum=1000),
        )
        return cls(
            address=listen_address("retriever"),
            milvus_uri=uri,
            milvus_token=env_str("RAGPLANE_MILVUS_TOKEN", ""),
            milvus_timeout_s=env_float("RAGPLANE_MILVUS_TIMEOUT_SECONDS", 30.0, minimum=0.1),
            reranker=RerankerSettings.from_env(),
            model_cache_s=env_float("RAGPLANE_RETRIEVER_MODEL_CACHE_SECONDS", 5.0, minimum=0.0),
            flush_rows=env_int("RAGPLANE_MILVUS_FLUSH_ROWS", 2000, minimum=0),
            flush_idle_s=env_float("RAGPLANE_MILVUS_FLUSH_IDLE_SECONDS", 2.0, minimum=0.0),
            identifier_boost=env_bool("RAGPLANE_RETRIEVER_IDENTIFIER_BOOST", True),
            fusion=fusion,
            plain_fusion=plain_fusion(fusion),
        )


def plain_fusion(fusion: Fusion) -> Fusion | None:
    """Query-adaptive fusion (RAGPLANE_FUSION_ADAPTIVE, on by default): plain-language
    queries fuse by weight, dense search weighing RAGPLANE_FUSION_PLAIN_DENSE_WEIGHT and
    BM25 the rest, since BM25 matches their common words (docs/retrieval.md)."""
    if not env_bool("RAGPLANE_FUSION_ADAPTIVE", True):
        return None
    dense = env_float("RAGPLANE_FUSION_PLAIN_DENSE_WEIGHT", PLAIN_DENSE_WEIGHT, minimum=0.0)
    if dense > 1.0:
        raise ConfigError(f"RAGPLANE_FUSION_PLAIN_DENSE_WEIGHT={dense:g} must be 0-1")
    return replace(fusion, method="weighted", dense_weight=dense, keyword_weight=1.0 - dense)
