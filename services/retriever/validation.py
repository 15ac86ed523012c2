"""The retriever's requests checked and turned into typed values: INVALID_ARGUMENT with a
message naming the field for anything Milvus would refuse or misread."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ragplane.errors import InvalidArgument
from ragplane.names import exact_terms
from ragplane.retriever.ranking import RerankOptions, RerankPlan, SearchMode, plan_rerank
from ragplane.retriever.rerank import MAX_CANDIDATES, RerankerSettings
from ragplane.retriever.schema import (
    COUNT_MARK,
    COUNT_MARK_BYTES,
    MAX_BYTES,
    MAX_DESCRIPTION_BYTES,
    MAX_METADATA_KEYS,
    MAX_TAGS,
    DocumentChunks,
    IndexedChunk,
    StoredChunk,
)
from ragplane.retriever.store import (
    RRF_K,
    DocumentPatch,
    Fusion,
    ModelRecord,
    filter_expression,
)
from ragplane.v1 import common_pb2, retriever_pb2

COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
DEFAULT_TOP_K = 5
MAX_TOP_K = 100
MAX_QUERY_CHARS = 8192
MAX_COLLECTIONS = 8
MAX_PAGE_SIZE = 10000
# A question's names: far more than any question names (the gateway's 4,000-character
# question has fewer words), each short enough to be a lookup's query.
MAX_NAME_TERMS = 1000
SEARCH_MODES: dict[int, SearchMode] = {
    common_pb2.SEARCH_MODE_UNSPECIFIED: SearchMode.HYBRID,
    common_pb2.SEARCH_MODE_DENSE: SearchMode.DENSE,
    common_pb2.SEARCH_MODE_KEYWORD: SearchMode.KEYWORD,
    common_pb2.SEARCH_MODE_HYBRID: SearchMode.HYBRID,
}


@dataclass(frozen=True)
class SearchDefaults:
    """What the server chooses for requests that do not."""

    fusion: Fusion
    identifier_boost: bool
    reranker: RerankerSettings
    reranker_available: bool
    # Hybrid fusion for queries that name no exact identifier (None: `fusion` for all).
    plain_fusion: Fusion | None = None

    def fusion_for(self, text: str | None) -> Fusion:
        """The default fusion for a hybrid query's text: `fusion` where the text names an
        exact identifier (exact_terms), `plain_fusion` where it is plain language."""
        if self.plain_fusion is None or (text and exact_terms(text)):
            return self.fusion
        return self.plain_fusion


@dataclass(frozen=True)
class NameCheck:
    """Names to check against the first `context_hits` hits (0: all of them) and, where
    those miss one, the rest of the corpus."""

    terms: list[str]
    context_hits: int = 0


@dataclass(frozen=True)
class SearchQuery:
    """A search, checked, with the server's defaults filled in."""

    collections: list[str]
    mode: SearchMode
    top_k: int
    rerank: RerankPlan
    # The query text where the mode or the reranker reads it.
    text: str | None
    # As given: its length is checked against the collections' model when it is known.
    vector: list[float]
    # The model the vector comes from, when the request names one (required with a vector).
    model: ModelRecord | None
    filter: str
    filter_tags: bool
    fusion: Fusion
    identifier_boost: bool
    name_check: NameCheck | None = None


# Collections and documents --------------------------------------------------------


def collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(
            f"collection name {name!r} is invalid: use letters, digits and _, "
            "not starting with a digit, at most 255 characters"
        )
    return name


def model_record(model: common_pb2.ModelIdentity, field: str) -> ModelRecord:
    if not model.id or not model.dimension:
        raise InvalidArgument(f"{field}.id and {field}.dimension are required")
    return ModelRecord(model.id, model.revision, model.weights_sha256, model.dimension)


def description(value: str) -> str:
    size = len(value.encode())
    if size > MAX_DESCRIPTION_BYTES:
        raise InvalidArgument(f"description is {size} bytes; the limit is {MAX_DESCRIPTION_BYTES}")
    return value


def page_size(value: int) -> int:
    if value > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size is {value}; the limit is {MAX_PAGE_SIZE} (0: all)")
    return value


def document_patch(patch: common_pb2.DocumentPatch) -> DocumentPatch:
    """The changes a patch asks for; a patch that changes nothing is refused."""
    tags = metadata = title = None
    if patch.HasField("tags"):
        check_tags(patch.tags.values, "patch.tags")
        tags = tuple(dict.fromkeys(patch.tags.values))
    if patch.HasField("metadata"):
        metadata = check_metadata(patch.metadata.entries, "patch.metadata")
    if patch.HasField("title"):
        check_text_field(patch.title, "title", "patch.title")
        title = patch.title
    if tags is None and metadata is None and title is None:
        raise InvalidArgument("patch changes nothing: set tags, metadata or title")
    return DocumentPatch(tags, metadata, title)


def check_metadata(entries: Mapping[str, str], where: str) -> dict[str, str]:
    if len(entries) > MAX_METADATA_KEYS:
        raise InvalidArgument(f"{where} has {len(entries)} keys; the limit is {MAX_METADATA_KEYS}")
    for key, value in entries.items():
        if not key:
            raise InvalidArgument(f"{where} has an empty key")
        check_text_field(key, "metadata_key", f"{where} key {key[:40]!r}")
        check_text_field(value, "metadata_value", f"{where}[{key[:40]!r}]")
    return dict(entries)


def document_ids(values: Sequence[str], where: str = "doc_ids") -> list[str]:
    for i, value in enumerate(values):
        check_text_field(value, "doc_id", f"{where}[{i}]")
    return list(values)


def document_id(value: str) -> str:
    if not value:
        raise InvalidArgument("doc_id is empty")
    check_text_field(value, "doc_id", "doc_id")
    return value


def documents(
    given: Sequence[retriever_pb2.DocumentChunks], dimension: int
) -> list[DocumentChunks]:
    """Every document's chunks, all checked before anything is written."""
    seen_docs: set[str] = set()
    seen_chunks: set[str] = set()
    validated = []
    for d, doc in enumerate(given):
        if not doc.doc_id:
            raise InvalidArgument(f"documents[{d}].doc_id is empty")
        check_text_field(doc.doc_id, "doc_id", f"documents[{d}].doc_id")
        if doc.doc_id in seen_docs:
            raise InvalidArgument(f"document {doc.doc_id!r} appears twice in one request")
        seen_docs.add(doc.doc_id)
        chunks = []
        for c, indexed in enumerate(doc.chunks):
            chunk = _indexed_chunk(
                doc.doc_id, indexed, dimension, f"document {doc.doc_id!r} chunks[{c}]"
            )
            if chunk.chunk.id in seen_chunks:
                raise InvalidArgument(f"chunk id {chunk.chunk.id!r} appears twice in one request")
            seen_chunks.add(chunk.chunk.id)
            chunks.append(chunk)
        validated.append(DocumentChunks(doc.doc_id, chunks))
    return validated


def _indexed_chunk(
    doc_id: str, indexed: retriever_pb2.IndexedChunk, dimension: int, where: str
) -> IndexedChunk:
    chunk = indexed.chunk
    if not chunk.id:
        raise InvalidArgument(f"{where}: chunk.id is empty")
    if chunk.doc_id and chunk.doc_id != doc_id:
        raise InvalidArgument(f"{where}: chunk.doc_id {chunk.doc_id!r} is not its document's")
    if not chunk.text.strip():
        raise InvalidArgument(f"{where}: chunk.text is empty")
    texts = {
        "id": chunk.id,
        "doc_id": doc_id,
        "doc_hash": chunk.doc_hash,
        "title": chunk.title,
        "source": chunk.source,
        "section": chunk.section,
        "content_hash": chunk.content_hash,
        "text": chunk.text,
    }
    for field, value in texts.items():
        check_text_field(value, field, f"{where}: chunk.{field}")
    if COUNT_MARK in chunk.doc_hash:
        raise InvalidArgument(f"{where}: chunk.doc_hash holds {COUNT_MARK!r}")
    if len(chunk.doc_hash.encode()) > MAX_BYTES["doc_hash"] - COUNT_MARK_BYTES:
        raise InvalidArgument(
            f"{where}: chunk.doc_hash is longer than "
            f"{MAX_BYTES['doc_hash'] - COUNT_MARK_BYTES} bytes"
        )
    check_tags(chunk.tags, f"{where}: chunk.tags")
    metadata = check_metadata(chunk.metadata, f"{where}: chunk.metadata")
    stored = StoredChunk(
        id=chunk.id,
        doc_id=doc_id,
        title=chunk.title,
        source=chunk.source,
        section=chunk.section,
        position=chunk.position,
        content_hash=chunk.content_hash,
        text=chunk.text,
        doc_hash=chunk.doc_hash,
        tags=tuple(dict.fromkeys(chunk.tags)),
        metadata=metadata,
    )
    return IndexedChunk(stored, vector(indexed.vector, dimension, f"{where}: vector"))


# Search ---------------------------------------------------------------------------


def search_query(request: retriever_pb2.SearchRequest, defaults: SearchDefaults) -> SearchQuery:
    """The search a request asks for; the vector's length is checked later, against the
    model of the collections searched."""
    names = collection_names(request.collection, request.extra_collections)
    mode, top_k = search_mode(request.mode), _top_k(request.top_k)
    rerank = plan_rerank(
        rerank_options(request.rerank), top_k, defaults.reranker, defaults.reranker_available
    )
    text = None
    if mode.uses_text or rerank.on:
        text = query_text(request.query_text, mode, rerank.on)
    if mode.uses_vector and not request.query_vector:
        raise InvalidArgument(f"query_vector is required in {mode.value} mode")
    expr = metadata_filter(request.filter)
    chosen_fusion = fusion(request.fusion, defaults.fusion_for(text))
    boost = identifier_boost(request.identifier_boost, defaults.identifier_boost)
    checked = name_check(request.name_check) if request.HasField("name_check") else None
    model = None
    if request.query_vector or request.model.id:
        model = model_record(request.model, "model")
    return SearchQuery(
        collections=names,
        mode=mode,
        top_k=top_k,
        rerank=rerank,
        text=text,
        vector=list(request.query_vector),
        model=model,
        filter=expr,
        filter_tags=bool(request.filter.tags),
        fusion=chosen_fusion,
        identifier_boost=boost,
        name_check=checked if checked and checked.terms else None,
    )


def collection_names(first: str, extra: Sequence[str]) -> list[str]:
    names = [collection_name(first)]
    for name in extra:
        if collection_name(name) not in names:
            names.append(name)
    if len(names) > MAX_COLLECTIONS:
        raise InvalidArgument(
            f"{len(names)} collections in one search; the limit is {MAX_COLLECTIONS}"
        )
    return names


def search_mode(mode: int) -> SearchMode:
    if mode not in SEARCH_MODES:
        raise InvalidArgument(f"mode {mode} is not a SearchMode")
    return SEARCH_MODES[mode]


def _top_k(top_k: int) -> int:
    if top_k > MAX_TOP_K:
        raise InvalidArgument(f"top_k is {top_k}; it must be 1-{MAX_TOP_K} (0 means 5)")
    return top_k or DEFAULT_TOP_K


def rerank_options(options: common_pb2.Rerank) -> RerankOptions:
    if not 0.0 <= options.weight <= 1.0:
        raise InvalidArgument(f"rerank.weight is {options.weight:g}; it must be 0-1")
    if options.candidates > MAX_CANDIDATES:
        raise InvalidArgument(
            f"rerank.candidates is {options.candidates}; it must be at most {MAX_CANDIDATES}"
        )
    on = None
    if options.mode != common_pb2.RERANK_MODE_UNSPECIFIED:
        on = options.mode == common_pb2.RERANK_MODE_ON
    return RerankOptions(on, options.candidates, options.weight)


def query_text(text: str, mode: SearchMode, rerank: bool = False) -> str:
    if not text.strip():
        if rerank and mode is SearchMode.DENSE:
            raise InvalidArgument("query_text is required to rerank")
        raise InvalidArgument(f"query_text is required in {mode.value} mode")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidArgument(
            f"query_text has {len(text)} characters; the limit is {MAX_QUERY_CHARS}"
        )
    return text


def fusion(given: common_pb2.Fusion, default: Fusion) -> Fusion:
    if given.method not in (
        common_pb2.FUSION_METHOD_UNSPECIFIED,
        common_pb2.FUSION_METHOD_RRF,
        common_pb2.FUSION_METHOD_WEIGHTED,
    ):
        raise InvalidArgument(f"fusion.method {given.method} is not a FusionMethod")
    if given.rrf_k > 16384:
        raise InvalidArgument(f"fusion.rrf_k is {given.rrf_k}; it must be 1-16384 (0 means 60)")
    weights = (given.dense_weight, given.keyword_weight)
    if any(not 0.0 <= w <= 1.0 for w in weights):
        raise InvalidArgument(f"fusion weights must be 0-1; got {weights[0]:g} and {weights[1]:g}")
    if given.method == common_pb2.FUSION_METHOD_UNSPECIFIED:
        return default
    # The request chooses the method; the server's fusion depth stays.
    if given.method == common_pb2.FUSION_METHOD_WEIGHTED:
        dense, keyword = weights if any(weights) else (0.5, 0.5)
        return replace(default, method="weighted", dense_weight=dense, keyword_weight=keyword)
    return replace(default, method="rrf", rrf_k=given.rrf_k or RRF_K)


def identifier_boost(boost: int, default: bool) -> bool:
    if boost == common_pb2.IDENTIFIER_BOOST_UNSPECIFIED:
        return default
    if boost not in (common_pb2.IDENTIFIER_BOOST_OFF, common_pb2.IDENTIFIER_BOOST_ON):
        raise InvalidArgument(f"identifier_boost {boost} is not an IdentifierBoost")
    return boost == common_pb2.IDENTIFIER_BOOST_ON


def name_check(given: retriever_pb2.NameCheck) -> NameCheck:
    if len(given.terms) > MAX_NAME_TERMS:
        raise InvalidArgument(
            f"name_check.terms has {len(given.terms)} names; the limit is {MAX_NAME_TERMS}"
        )
    for i, term in enumerate(given.terms):
        if len(term) > MAX_QUERY_CHARS:
            raise InvalidArgument(
                f"name_check.terms[{i}] has {len(term)} characters; the limit is {MAX_QUERY_CHARS}"
            )
    return NameCheck(list(given.terms), given.context_hits)


def metadata_filter(f: common_pb2.MetadataFilter) -> str:
    """The Milvus filter expression for the request's filter ("" matches all)."""
    document_ids(f.doc_ids, "filter.doc_ids")
    check_text_field(f.source_prefix, "source", "filter.source_prefix")
    check_tags(f.tags, "filter.tags")
    return filter_expression(list(f.doc_ids), f.source_prefix, list(f.tags))


# Values ---------------------------------------------------------------------------


def vector(values: Sequence[float], dimension: int, where: str) -> list[float]:
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


def check_text_field(value: str, field: str, where: str) -> None:
    size = len(value.encode())
    if size > MAX_BYTES[field]:
        raise InvalidArgument(f"{where} is {size} bytes; the limit is {MAX_BYTES[field]}")


def check_tags(tags: Sequence[str], where: str) -> None:
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(f"{where} has {len(tags)} tags; the limit is {MAX_TAGS}")
    for i, tag in enumerate(tags):
        if not tag:
            raise InvalidArgument(f"{where}[{i}] is empty")
        check_text_field(tag, "tag", f"{where}[{i}]")
