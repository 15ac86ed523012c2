"""Retriever service: chunks with their metadata and vectors in Milvus; dense, keyword
(BM25) and hybrid (RRF) search, in collections bound to one embedding model."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc
import numpy as np
from opentelemetry import trace

from ragplane.config import env_bool, env_choice, env_float, env_int, env_str, listen_address
from ragplane.errors import AlreadyExists, ConfigError, FailedPrecondition, InvalidArgument
from ragplane.names import identifier_terms, normal
from ragplane.retriever import metrics
from ragplane.retriever.rerank import (
    MAX_CANDIDATES,
    Reranker,
    RerankerSettings,
    load,
    rerank_order,
)
from ragplane.retriever.store import (
    MAX_BYTES,
    MAX_TAGS,
    RRF_K,
    DocumentSummary,
    Fusion,
    Hit,
    MilvusStore,
    ModelRecord,
    filter_expression,
)
from ragplane.server import run_service, serve
from ragplane.telemetry import tracer
from ragplane.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc

COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
DEFAULT_TOP_K = 5
MAX_TOP_K = 100
MAX_QUERY_CHARS = 8192
MAX_COLLECTIONS = 8
# With the identifier boost, candidates fetched per result wanted (at least
# IDENTIFIER_POOL): the chunk that names the identifier often ranks below the cut.
IDENTIFIER_POOL_FACTOR = 2
IDENTIFIER_POOL = 20
SEARCH_MODES: dict[int, int] = {
    common_pb2.SEARCH_MODE_UNSPECIFIED: common_pb2.SEARCH_MODE_HYBRID,
    common_pb2.SEARCH_MODE_DENSE: common_pb2.SEARCH_MODE_DENSE,
    common_pb2.SEARCH_MODE_KEYWORD: common_pb2.SEARCH_MODE_KEYWORD,
    common_pb2.SEARCH_MODE_HYBRID: common_pb2.SEARCH_MODE_HYBRID,
}


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

    @classmethod
    def from_env(cls) -> RetrieverSettings:
        uri = env_str("RAGPLANE_MILVUS_URI", "http://127.0.0.1:19530")
        if not uri.startswith(("http://", "https://", "tcp://", "grpc://")):
            raise ConfigError(
                f"RAGPLANE_MILVUS_URI={uri!r} must be a server URI such as "
                "http://127.0.0.1:19530 (run Milvus Lite as a server, not a .db path)"
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
            fusion=Fusion(
                env_choice("RAGPLANE_FUSION", "rrf", ("rrf", "weighted")),
                rrf_k=env_int("RAGPLANE_FUSION_RRF_K", RRF_K, minimum=1, maximum=16384),
                dense_weight=env_float("RAGPLANE_FUSION_DENSE_WEIGHT", 0.5, minimum=0.0),
                keyword_weight=env_float("RAGPLANE_FUSION_KEYWORD_WEIGHT", 0.5, minimum=0.0),
                depth_factor=env_int("RAGPLANE_FUSION_DEPTH_FACTOR", 3, minimum=1, maximum=20),
                min_depth=env_int("RAGPLANE_FUSION_MIN_DEPTH", 20, minimum=1, maximum=1000),
            ),
        )


class RetrieverServicer(retriever_pb2_grpc.RetrieverServiceServicer):
    """The RetrieverService RPCs: validation here, every Milvus call in the store."""

    def __init__(
        self,
        store: MilvusStore,
        reranker: Reranker,
        fusion: Fusion,
        model_cache_s: float,
        identifier_boost: bool = True,
    ) -> None:
        self._store = store
        self._reranker = reranker
        self._fusion = fusion
        self._model_cache_s = model_cache_s
        self._identifier_boost = identifier_boost

    async def CreateCollection(self, request, context):  # noqa: N802 - gRPC method name
        """Creates a collection bound to one embedding model (idempotent with exist_ok)."""
        name = _collection_name(request.name)
        model = _model_record(request.model, "model")
        created = await self._store.create_collection(name, model)
        if not created:
            stored = await self._store.model_of(name)
            if not request.exist_ok:
                raise AlreadyExists(f"collection '{name}' already exists ({stored.label()})")
            if not stored.matches(model):
                raise FailedPrecondition(
                    f"collection '{name}' exists with {stored.label()}, not {model.label()}; "
                    "use another collection name or the same embedder"
                )
        return retriever_pb2.CreateCollectionResponse(
            collection=await self._describe(name), created=created
        )

    async def DescribeCollection(self, request, context):  # noqa: N802
        """A collection's embedding model and chunk count."""
        name = _collection_name(request.name)
        return retriever_pb2.DescribeCollectionResponse(collection=await self._describe(name))

    async def DropCollection(self, request, context):  # noqa: N802
        """Drops a collection and all its chunks."""
        await self._store.drop_collection(_collection_name(request.name))
        return retriever_pb2.DropCollectionResponse()

    async def ListDocuments(self, request, context):  # noqa: N802
        """Stored documents (all, or the ones named) with content hash and chunk count."""
        name = _collection_name(request.collection)
        await self._store.model_of(name)
        doc_ids = list(request.doc_ids)
        for i, doc_id in enumerate(doc_ids):
            _check_text_field(doc_id, "doc_id", f"doc_ids[{i}]")
        documents = await self._store.documents(name, doc_ids)
        return retriever_pb2.ListDocumentsResponse(documents=[_stored(d) for d in documents])

    async def Upsert(self, request, context):  # noqa: N802
        """Writes documents' chunks; afterwards each document has exactly the chunks given."""
        name = _collection_name(request.collection)
        model = await self._bound_model(name, request.model, "index")
        documents = _validated_documents(request.documents, model.dimension)
        if not await self._store.has_tags(name):
            for doc_id, rows in documents:
                if any(row.pop("tags") for row in rows):
                    raise FailedPrecondition(
                        f"collection '{name}' was created before tags existed; index "
                        f"{doc_id!r} without tags or into a new collection"
                    )
        results = []
        counts = await self._store.replace_documents(name, documents) if documents else []
        for (doc_id, _), (written, deleted) in zip(documents, counts, strict=True):
            metrics.CHUNKS_WRITTEN.inc(written)
            metrics.CHUNKS_DELETED.inc(deleted)
            results.append(
                retriever_pb2.DocumentUpsertResult(
                    doc_id=doc_id, chunks_written=written, chunks_deleted=deleted
                )
            )
        return retriever_pb2.UpsertResponse(results=results)

    async def DeleteDocument(self, request, context):  # noqa: N802
        """Removes every chunk of one document and says how many there were."""
        name = _collection_name(request.collection)
        if not request.doc_id:
            raise InvalidArgument("doc_id is empty")
        _check_text_field(request.doc_id, "doc_id", "doc_id")
        await self._store.model_of(name)
        deleted = await self._store.delete_document(name, request.doc_id)
        metrics.CHUNKS_DELETED.inc(deleted)
        return retriever_pb2.DeleteDocumentResponse(chunks_deleted=deleted)

    async def Search(self, request, context):  # noqa: N802
        """Dense, keyword (BM25) or hybrid (RRF or weighted) search over one or more
        collections, filtered by metadata, with the top candidates optionally reranked."""
        names = _collection_names(request.collection, request.extra_collections)
        mode, top_k = _search_mode(request.mode), _top_k(request.top_k)
        rerank, candidates, weight = self._rerank_plan(request.rerank, top_k)
        text = None
        if mode != common_pb2.SEARCH_MODE_DENSE or rerank:
            text = _query_text(request.query_text, mode, rerank)
        uses_vector = mode != common_pb2.SEARCH_MODE_KEYWORD
        uses_text = mode != common_pb2.SEARCH_MODE_DENSE
        if uses_vector and not request.query_vector:
            raise InvalidArgument(f"query_vector is required in {_mode_name(mode)} mode")
        expr = _filter(request.filter)
        fusion = _fusion(request.fusion, self._fusion)
        boost = _boost(request.identifier_boost, self._identifier_boost)
        identifiers = identifier_terms(text) if boost and text and uses_text else []
        model = await self._shared_model(names, request)
        query = (
            _vector(request.query_vector, model.dimension, "query_vector")
            if request.query_vector
            else None
        )
        wanted = candidates if rerank else top_k
        limit = max(wanted * IDENTIFIER_POOL_FACTOR, IDENTIFIER_POOL) if identifiers else wanted
        started = time.perf_counter()
        searches = [self._ranked(names, mode, limit, query, text, expr, fusion)]
        if identifiers and mode == common_pb2.SEARCH_MODE_HYBRID:
            # Fusion ranks a chunk that only BM25 finds below the chunks both sides find,
            # so the chunk naming the identifier can miss the fused pool: BM25's own best
            # join it, as many as the fused pool. (A request for 3 still fuses shallower
            # lists than one for 20, so their top hits can differ; docs/retrieval.md.)
            keyword = common_pb2.SEARCH_MODE_KEYWORD
            searches.append(self._ranked(names, keyword, limit, query, text, expr, fusion))
        ranked = await asyncio.gather(*searches)
        merged = _union(ranked[0], ranked[1]) if len(ranked) > 1 else ranked[0]
        if identifiers:
            trace.get_current_span().set_attribute("ragplane.identifiers", identifiers)
            strict = identifier_terms(text, compounds=False) if text else []
            merged = promote_mentions(merged, identifiers, strict)[:wanted]
        response = retriever_pb2.SearchResponse()
        if rerank and merged:
            assert text is not None
            rerank_started = time.perf_counter()
            with tracer.start_as_current_span("rerank") as span:
                span.set_attributes(
                    {"ragplane.reranker": self._reranker.label, "ragplane.candidates": len(merged)}
                )
                scores = await self._reranker.score(text, [h.fields["text"] for _, h in merged])
            elapsed = time.perf_counter() - rerank_started
            metrics.RERANK_DURATION.observe(elapsed)
            response.rerank_ms = elapsed * 1000
            response.reranker = self._reranker.label
            order = rerank_order(scores, weight)
            chosen = [(merged[i], scores[i]) for i in order[:top_k]]
            response.hits.extend(
                _scored(hit, query, mode, name, score) for (name, hit), score in chosen
            )
        else:
            response.hits.extend(_scored(hit, query, mode, name) for name, hit in merged[:top_k])
        metrics.SEARCH_HITS.observe(len(response.hits))
        response.timing.compute_ms = (time.perf_counter() - started) * 1000
        return response

    async def _shared_model(
        self, names: list[str], request: retriever_pb2.SearchRequest
    ) -> ModelRecord:
        """The one model every searched collection is bound to (and the query's, when it
        names one); a tag filter also needs every collection to have tags."""
        model = None
        for name in names:
            if request.query_vector or request.model.id:
                bound = await self._bound_model(name, request.model, "query", self._model_cache_s)
            else:
                bound = await self._store.model_of(name, self._model_cache_s)
            if model is not None and not model.matches(bound):
                raise FailedPrecondition(
                    f"collections '{names[0]}' ({model.label()}) and '{name}' "
                    f"({bound.label()}) hold vectors of different models; search them apart"
                )
            model = bound
            if request.filter.tags and not await self._store.has_tags(name):
                raise FailedPrecondition(
                    f"collection '{name}' was created before tags existed; it cannot be "
                    "filtered by tags (re-index it into a new collection)"
                )
        assert model is not None
        return model

    def _rerank_plan(self, options: common_pb2.Rerank, top_k: int) -> tuple[bool, int, float]:
        """Whether to rerank, how many candidates (N) to rescore for the top_k (K), and
        the weight of the reranker's order."""
        if not 0.0 <= options.weight <= 1.0:
            raise InvalidArgument(f"rerank.weight is {options.weight:g}; it must be 0-1")
        if options.candidates > MAX_CANDIDATES:
            raise InvalidArgument(
                f"rerank.candidates is {options.candidates}; it must be at most {MAX_CANDIDATES}"
            )
        settings = self._reranker.settings
        if options.mode == common_pb2.RERANK_MODE_ON and not self._reranker.available:
            raise FailedPrecondition(
                "reranking was asked for, but this retriever runs without a reranker "
                "(RAGPLANE_RERANKER=none)"
            )
        if options.mode == common_pb2.RERANK_MODE_UNSPECIFIED:
            on = settings.default_on and self._reranker.available
        else:
            on = options.mode == common_pb2.RERANK_MODE_ON
        candidates = max(options.candidates or settings.default_candidates, top_k)
        return on, candidates, options.weight or settings.default_weight

    async def _ranked(
        self,
        names: list[str],
        mode: int,
        limit: int,
        query: list[float] | None,
        text: str | None,
        expr: str,
        fusion: Fusion,
    ) -> list[tuple[str, Hit]]:
        """One ranking of the collections' chunks in a mode."""
        found = await asyncio.gather(
            *(
                self._milvus_search(
                    name,
                    mode,
                    limit,
                    query if mode != common_pb2.SEARCH_MODE_KEYWORD else None,
                    text if mode != common_pb2.SEARCH_MODE_DENSE else None,
                    expr,
                    query,
                    fusion,
                )
                for name in names
            )
        )
        return _merge(list(zip(names, found, strict=True)), mode)

    async def _milvus_search(
        self,
        name: str,
        mode: int,
        limit: int,
        vector: list[float] | None,
        text: str | None,
        expr: str,
        relevance_to: list[float] | None,
        fusion: Fusion,
    ) -> list[Hit]:
        started = time.perf_counter()
        with tracer.start_as_current_span("milvus search") as span:
            span.set_attributes(
                {
                    "ragplane.collection": name,
                    "ragplane.mode": _mode_name(mode),
                    "ragplane.limit": limit,
                }
            )
            # Dense scores are the cosine already; other modes fetch the chunk vectors.
            hits = await self._store.search(
                name,
                vector=vector,
                text=text,
                filter_expr=expr,
                limit=limit,
                with_vectors=relevance_to is not None and mode != common_pb2.SEARCH_MODE_DENSE,
                fusion=fusion,
                with_tags=await self._store.has_tags(name),
            )
            span.set_attribute("ragplane.hits", len(hits))
        metrics.SEARCH_DURATION.labels(_mode_name(mode)).observe(time.perf_counter() - started)
        return hits

    async def _bound_model(
        self, name: str, given: common_pb2.ModelIdentity, verb: str, max_age_s: float = 0.0
    ) -> ModelRecord:
        """The collection's model, refusing vectors that come from another one."""
        model = _model_record(given, "model")
        stored = await self._store.model_of(name, max_age_s)
        if not stored.matches(model):
            raise FailedPrecondition(
                f"collection '{name}' was indexed with {stored.label()} but these vectors come "
                f"from {model.label()}; {verb} with the same embedder or re-index the collection"
            )
        return stored

    async def _describe(self, name: str) -> retriever_pb2.Collection:
        model = await self._store.model_of(name)
        return retriever_pb2.Collection(
            name=name, model=_model_message(model), chunk_count=await self._store.count(name)
        )


# Validation -----------------------------------------------------------------------


def _collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(
            f"collection name {name!r} is invalid: use letters, digits and _, "
            "not starting with a digit, at most 255 characters"
        )
    return name


def _model_record(model: common_pb2.ModelIdentity, field: str) -> ModelRecord:
    if not model.id or not model.dimension:
        raise InvalidArgument(f"{field}.id and {field}.dimension are required")
    return ModelRecord(model.id, model.revision, model.weights_sha256, model.dimension)


def _model_message(model: ModelRecord) -> common_pb2.ModelIdentity:
    return common_pb2.ModelIdentity(
        id=model.id,
        revision=model.revision,
        weights_sha256=model.weights_sha256,
        dimension=model.dimension,
    )


def _collection_names(first: str, extra: Sequence[str]) -> list[str]:
    names = [_collection_name(first)]
    for name in extra:
        if _collection_name(name) not in names:
            names.append(name)
    if len(names) > MAX_COLLECTIONS:
        raise InvalidArgument(
            f"{len(names)} collections in one search; the limit is {MAX_COLLECTIONS}"
        )
    return names


def _fusion(fusion: common_pb2.Fusion, default: Fusion) -> Fusion:
    if fusion.method not in (
        common_pb2.FUSION_METHOD_UNSPECIFIED,
        common_pb2.FUSION_METHOD_RRF,
        common_pb2.FUSION_METHOD_WEIGHTED,
    ):
        raise InvalidArgument(f"fusion.method {fusion.method} is not a FusionMethod")
    if fusion.rrf_k > 16384:
        raise InvalidArgument(f"fusion.rrf_k is {fusion.rrf_k}; it must be 1-16384 (0 means 60)")
    weights = (fusion.dense_weight, fusion.keyword_weight)
    if any(not 0.0 <= w <= 1.0 for w in weights):
        raise InvalidArgument(f"fusion weights must be 0-1; got {weights[0]:g} and {weights[1]:g}")
    if fusion.method == common_pb2.FUSION_METHOD_UNSPECIFIED:
        return default
    # The request chooses the method; the server's fusion depth stays.
    if fusion.method == common_pb2.FUSION_METHOD_WEIGHTED:
        dense, keyword = weights if any(weights) else (0.5, 0.5)
        return replace(default, method="weighted", dense_weight=dense, keyword_weight=keyword)
    return replace(default, method="rrf", rrf_k=fusion.rrf_k or RRF_K)


def _merge(found: list[tuple[str, list[Hit]]], mode: int) -> list[tuple[str, Hit]]:
    """One ranking from several collections' rankings. Cosine scores share one scale,
    so dense hits merge by score; BM25 and fused scores do not (each collection has its
    own statistics), so those merge by reciprocal rank."""
    if len(found) == 1:
        name, hits = found[0]
        return [(name, h) for h in hits]
    if mode == common_pb2.SEARCH_MODE_DENSE:
        pairs = [(name, h) for name, hits in found for h in hits]
        return sorted(pairs, key=lambda pair: -pair[1].score)
    fused = [
        (name, Hit(h.fields, 1.0 / (RRF_K + rank + 1)))
        for name, hits in found
        for rank, h in enumerate(hits)
    ]
    return sorted(fused, key=lambda pair: -pair[1].score)


def _union(fused: list[tuple[str, Hit]], extra: list[tuple[str, Hit]]) -> list[tuple[str, Hit]]:
    """The fused ranking, then the extra hits it lacks, scored as its last."""
    seen = {(name, hit.fields["id"]) for name, hit in fused}
    floor = min((hit.score for _, hit in fused), default=0.0)
    return fused + [
        (name, Hit(hit.fields, floor))
        for name, hit in extra
        if (name, hit.fields["id"]) not in seen
    ]


def promote_mentions(
    ranked: list[tuple[str, Hit]], identifiers: list[str], strict_identifiers: list[str]
) -> list[tuple[str, Hit]]:
    """The ranking with hits that mention more of the identifiers first, in their order
    otherwise: a chunk that does not name the error code or setting asked about is about
    something else, however close its words. Identifiers with an underscore or a digit
    count before hyphenated words, which are often plain English (read-write)."""
    strict = [normal(t) for t in strict_identifiers]
    compounds = [normal(t) for t in identifiers if t not in strict_identifiers]

    def mentioned(hit: Hit) -> tuple[int, int]:
        fields = hit.fields
        text = normal(f"{fields['title']} {fields['section']} {fields['text']}")
        return -sum(t in text for t in strict), -sum(t in text for t in compounds)

    return sorted(ranked, key=lambda pair: mentioned(pair[1]))


def _boost(boost: int, default: bool) -> bool:
    if boost == common_pb2.IDENTIFIER_BOOST_UNSPECIFIED:
        return default
    if boost not in (common_pb2.IDENTIFIER_BOOST_OFF, common_pb2.IDENTIFIER_BOOST_ON):
        raise InvalidArgument(f"identifier_boost {boost} is not an IdentifierBoost")
    return boost == common_pb2.IDENTIFIER_BOOST_ON


def _search_mode(mode: int) -> int:
    if mode not in SEARCH_MODES:
        raise InvalidArgument(f"mode {mode} is not a SearchMode")
    return SEARCH_MODES[mode]


def _top_k(top_k: int) -> int:
    if top_k > MAX_TOP_K:
        raise InvalidArgument(f"top_k is {top_k}; it must be 1-{MAX_TOP_K} (0 means 5)")
    return top_k or DEFAULT_TOP_K


def _mode_name(mode: int) -> str:
    return common_pb2.SearchMode.Name(mode).removeprefix("SEARCH_MODE_").lower()


def _query_text(text: str, mode: int, rerank: bool = False) -> str:
    if not text.strip():
        if rerank and mode == common_pb2.SEARCH_MODE_DENSE:
            raise InvalidArgument("query_text is required to rerank")
        raise InvalidArgument(f"query_text is required in {_mode_name(mode)} mode")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidArgument(
            f"query_text has {len(text)} characters; the limit is {MAX_QUERY_CHARS}"
        )
    return text


def _vector(values: Sequence[float], dimension: int, where: str) -> list[float]:
    if len(values) != dimension:
        raise InvalidArgument(
            f"{where} has {len(values)} values; the collection's model makes {dimension}"
        )
    array = np.asarray(values, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InvalidArgument(f"{where} contains NaN or infinite values")
    if not array.any():
        raise InvalidArgument(f"{where} is all zeros (cosine similarity is undefined)")
    return array.tolist()


def _check_text_field(value: str, field: str, where: str) -> None:
    size = len(value.encode())
    if size > MAX_BYTES[field]:
        raise InvalidArgument(f"{where} is {size} bytes; the limit is {MAX_BYTES[field]}")


def _filter(f: common_pb2.MetadataFilter) -> str:
    for i, doc_id in enumerate(f.doc_ids):
        _check_text_field(doc_id, "doc_id", f"filter.doc_ids[{i}]")
    _check_text_field(f.source_prefix, "source", "filter.source_prefix")
    _check_tags(f.tags, "filter.tags")
    return filter_expression(list(f.doc_ids), f.source_prefix, list(f.tags))


def _check_tags(tags: Sequence[str], where: str) -> None:
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(f"{where} has {len(tags)} tags; the limit is {MAX_TAGS}")
    for i, tag in enumerate(tags):
        if not tag:
            raise InvalidArgument(f"{where}[{i}] is empty")
        _check_text_field(tag, "tag", f"{where}[{i}]")


def _validated_documents(
    documents: Sequence[retriever_pb2.DocumentChunks], dimension: int
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every document's rows, all checked before anything is written."""
    seen_docs: set[str] = set()
    seen_chunks: set[str] = set()
    validated = []
    for d, doc in enumerate(documents):
        if not doc.doc_id:
            raise InvalidArgument(f"documents[{d}].doc_id is empty")
        _check_text_field(doc.doc_id, "doc_id", f"documents[{d}].doc_id")
        if doc.doc_id in seen_docs:
            raise InvalidArgument(f"document {doc.doc_id!r} appears twice in one request")
        seen_docs.add(doc.doc_id)
        rows = []
        for c, indexed in enumerate(doc.chunks):
            row = _row(doc.doc_id, indexed, dimension, f"document {doc.doc_id!r} chunks[{c}]")
            if row["id"] in seen_chunks:
                raise InvalidArgument(f"chunk id {row['id']!r} appears twice in one request")
            seen_chunks.add(row["id"])
            rows.append(row)
        validated.append((doc.doc_id, rows))
    return validated


def _row(
    doc_id: str, indexed: retriever_pb2.IndexedChunk, dimension: int, where: str
) -> dict[str, Any]:
    chunk = indexed.chunk
    if not chunk.id:
        raise InvalidArgument(f"{where}: chunk.id is empty")
    if chunk.doc_id and chunk.doc_id != doc_id:
        raise InvalidArgument(f"{where}: chunk.doc_id {chunk.doc_id!r} is not its document's")
    if not chunk.text.strip():
        raise InvalidArgument(f"{where}: chunk.text is empty")
    row: dict[str, Any] = {
        "id": chunk.id,
        "doc_id": doc_id,
        "doc_hash": chunk.doc_hash,
        "title": chunk.title,
        "source": chunk.source,
        "section": chunk.section,
        "content_hash": chunk.content_hash,
        "text": chunk.text,
    }
    for field, value in row.items():
        _check_text_field(value, field, f"{where}: chunk.{field}")
    _check_tags(chunk.tags, f"{where}: chunk.tags")
    row["tags"] = list(dict.fromkeys(chunk.tags))
    row["position"] = chunk.position
    row["dense"] = _vector(indexed.vector, dimension, f"{where}: vector")
    return row


# Responses ------------------------------------------------------------------------


def _stored(doc: DocumentSummary) -> retriever_pb2.StoredDocument:
    return retriever_pb2.StoredDocument(
        doc_id=doc.doc_id,
        doc_hash=doc.doc_hash,
        chunk_count=doc.chunk_count,
        title=doc.title,
        source=doc.source,
    )


def _relevance(hit: Hit, query: list[float] | None, mode: int) -> float:
    """Cosine of query and chunk; the embedder's vectors are unit length."""
    if query is None:
        return 0.0
    if mode == common_pb2.SEARCH_MODE_DENSE:
        return hit.score
    return float(
        np.dot(
            np.asarray(query, dtype=np.float32), np.asarray(hit.fields["dense"], dtype=np.float32)
        )
    )


def _scored(
    hit: Hit,
    query: list[float] | None,
    mode: int,
    collection: str,
    rerank_score: float | None = None,
) -> common_pb2.ScoredChunk:
    f = hit.fields
    chunk = common_pb2.Chunk(
        id=f["id"],
        doc_id=f["doc_id"],
        title=f["title"],
        source=f["source"],
        section=f["section"],
        position=int(f["position"]),
        content_hash=f["content_hash"],
        text=f["text"],
        doc_hash=f["doc_hash"],
        tags=f.get("tags") or [],
    )
    return common_pb2.ScoredChunk(
        chunk=chunk,
        score=hit.score,
        relevance=_relevance(hit, query, mode),
        collection=collection,
        rerank_score=rerank_score or 0.0,
        reranked=rerank_score is not None,
    )


# Entry point ----------------------------------------------------------------------


async def run(settings: RetrieverSettings) -> None:
    """Connects to Milvus (loading every collection) and serves until SIGTERM."""
    reranker = await asyncio.to_thread(load, settings.reranker)
    store = MilvusStore(
        settings.milvus_uri,
        settings.milvus_token,
        settings.milvus_timeout_s,
        flush_rows=settings.flush_rows,
        flush_idle_s=settings.flush_idle_s,
    )
    await store.start()
    servicer = RetrieverServicer(
        store, reranker, settings.fusion, settings.model_cache_s, settings.identifier_boost
    )

    def register(server: grpc.aio.Server) -> list[str]:
        retriever_pb2_grpc.add_RetrieverServiceServicer_to_server(servicer, server)
        return [retriever_pb2.DESCRIPTOR.services_by_name["RetrieverService"].full_name]

    async def shutdown() -> None:
        reranker.close()
        await store.close()

    await serve("retriever", settings.address, register, on_shutdown=shutdown)


def main() -> None:
    run_service("retriever", lambda: run(RetrieverSettings.from_env()))


if __name__ == "__main__":
    main()
