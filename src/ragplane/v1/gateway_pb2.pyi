import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ragplane.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INGEST_STATUS_UNSPECIFIED: _ClassVar[IngestStatus]
    INGEST_STATUS_WRITTEN: _ClassVar[IngestStatus]
    INGEST_STATUS_UNCHANGED: _ClassVar[IngestStatus]
    INGEST_STATUS_FAILED: _ClassVar[IngestStatus]
    INGEST_STATUS_PENDING: _ClassVar[IngestStatus]
    INGEST_STATUS_DELETED: _ClassVar[IngestStatus]

class AbstainReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ABSTAIN_REASON_UNSPECIFIED: _ClassVar[AbstainReason]
    ABSTAIN_REASON_NO_HITS: _ClassVar[AbstainReason]
    ABSTAIN_REASON_LOW_RELEVANCE: _ClassVar[AbstainReason]
    ABSTAIN_REASON_UNKNOWN_NAMES: _ClassVar[AbstainReason]

class IngestJobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INGEST_JOB_STATUS_UNSPECIFIED: _ClassVar[IngestJobStatus]
    INGEST_JOB_STATUS_RECEIVING: _ClassVar[IngestJobStatus]
    INGEST_JOB_STATUS_QUEUED: _ClassVar[IngestJobStatus]
    INGEST_JOB_STATUS_RUNNING: _ClassVar[IngestJobStatus]
    INGEST_JOB_STATUS_SUCCEEDED: _ClassVar[IngestJobStatus]
    INGEST_JOB_STATUS_FAILED: _ClassVar[IngestJobStatus]
    INGEST_JOB_STATUS_CANCELLED: _ClassVar[IngestJobStatus]
INGEST_STATUS_UNSPECIFIED: IngestStatus
INGEST_STATUS_WRITTEN: IngestStatus
INGEST_STATUS_UNCHANGED: IngestStatus
INGEST_STATUS_FAILED: IngestStatus
INGEST_STATUS_PENDING: IngestStatus
INGEST_STATUS_DELETED: IngestStatus
ABSTAIN_REASON_UNSPECIFIED: AbstainReason
ABSTAIN_REASON_NO_HITS: AbstainReason
ABSTAIN_REASON_LOW_RELEVANCE: AbstainReason
ABSTAIN_REASON_UNKNOWN_NAMES: AbstainReason
INGEST_JOB_STATUS_UNSPECIFIED: IngestJobStatus
INGEST_JOB_STATUS_RECEIVING: IngestJobStatus
INGEST_JOB_STATUS_QUEUED: IngestJobStatus
INGEST_JOB_STATUS_RUNNING: IngestJobStatus
INGEST_JOB_STATUS_SUCCEEDED: IngestJobStatus
INGEST_JOB_STATUS_FAILED: IngestJobStatus
INGEST_JOB_STATUS_CANCELLED: IngestJobStatus

class Document(_message.Message):
    __slots__ = ("doc_id", "source", "title", "media_type", "content", "tags", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    doc_id: str
    source: str
    title: str
    media_type: str
    content: bytes
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, doc_id: _Optional[str] = ..., source: _Optional[str] = ..., title: _Optional[str] = ..., media_type: _Optional[str] = ..., content: _Optional[bytes] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("collection", "documents")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, collection: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class DocumentResult(_message.Message):
    __slots__ = ("doc_id", "status", "chunks_written", "chunks_deleted", "error")
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_DELETED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    doc_id: str
    status: IngestStatus
    chunks_written: int
    chunks_deleted: int
    error: str
    def __init__(self, doc_id: _Optional[str] = ..., status: _Optional[_Union[IngestStatus, str]] = ..., chunks_written: _Optional[int] = ..., chunks_deleted: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DocumentResult]
    def __init__(self, results: _Optional[_Iterable[_Union[DocumentResult, _Mapping]]] = ...) -> None: ...

class GatewayServiceDeleteDocumentRequest(_message.Message):
    __slots__ = ("collection", "doc_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    doc_id: str
    def __init__(self, collection: _Optional[str] = ..., doc_id: _Optional[str] = ...) -> None: ...

class GatewayServiceDeleteDocumentResponse(_message.Message):
    __slots__ = ("chunks_deleted",)
    CHUNKS_DELETED_FIELD_NUMBER: _ClassVar[int]
    chunks_deleted: int
    def __init__(self, chunks_deleted: _Optional[int] = ...) -> None: ...

class AskRequest(_message.Message):
    __slots__ = ("collection", "question", "top_k", "mode", "filter", "max_tokens", "fusion", "rerank", "extra_collections", "identifier_boost", "history", "temperature", "top_p", "stop")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    EXTRA_COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_BOOST_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    collection: str
    question: str
    top_k: int
    mode: _common_pb2.SearchMode
    filter: _common_pb2.MetadataFilter
    max_tokens: int
    fusion: _common_pb2.Fusion
    rerank: _common_pb2.Rerank
    extra_collections: _containers.RepeatedScalarFieldContainer[str]
    identifier_boost: _common_pb2.IdentifierBoost
    history: _containers.RepeatedCompositeFieldContainer[Turn]
    temperature: float
    top_p: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., question: _Optional[str] = ..., top_k: _Optional[int] = ..., mode: _Optional[_Union[_common_pb2.SearchMode, str]] = ..., filter: _Optional[_Union[_common_pb2.MetadataFilter, _Mapping]] = ..., max_tokens: _Optional[int] = ..., fusion: _Optional[_Union[_common_pb2.Fusion, _Mapping]] = ..., rerank: _Optional[_Union[_common_pb2.Rerank, _Mapping]] = ..., extra_collections: _Optional[_Iterable[str]] = ..., identifier_boost: _Optional[_Union[_common_pb2.IdentifierBoost, str]] = ..., history: _Optional[_Iterable[_Union[Turn, _Mapping]]] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ...) -> None: ...

class Turn(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Citation(_message.Message):
    __slots__ = ("index", "doc_id", "title", "source", "section", "chunk_id", "score", "collection", "text", "relevance")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SECTION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_FIELD_NUMBER: _ClassVar[int]
    index: int
    doc_id: str
    title: str
    source: str
    section: str
    chunk_id: str
    score: float
    collection: str
    text: str
    relevance: float
    def __init__(self, index: _Optional[int] = ..., doc_id: _Optional[str] = ..., title: _Optional[str] = ..., source: _Optional[str] = ..., section: _Optional[str] = ..., chunk_id: _Optional[str] = ..., score: _Optional[float] = ..., collection: _Optional[str] = ..., text: _Optional[str] = ..., relevance: _Optional[float] = ...) -> None: ...

class Citations(_message.Message):
    __slots__ = ("citations",)
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    citations: _containers.RepeatedCompositeFieldContainer[Citation]
    def __init__(self, citations: _Optional[_Iterable[_Union[Citation, _Mapping]]] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("embed_ms", "retrieve_ms", "prompt_ms", "time_to_first_token_ms", "generate_ms", "total_ms", "rerank_ms")
    EMBED_MS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVE_MS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_MS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    GENERATE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    RERANK_MS_FIELD_NUMBER: _ClassVar[int]
    embed_ms: float
    retrieve_ms: float
    prompt_ms: float
    time_to_first_token_ms: float
    generate_ms: float
    total_ms: float
    rerank_ms: float
    def __init__(self, embed_ms: _Optional[float] = ..., retrieve_ms: _Optional[float] = ..., prompt_ms: _Optional[float] = ..., time_to_first_token_ms: _Optional[float] = ..., generate_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., rerank_ms: _Optional[float] = ...) -> None: ...

class AskFinished(_message.Message):
    __slots__ = ("finish_reason", "usage", "timings", "abstained", "abstain_reason", "unknown_names", "cited_indexes", "invalid_citations", "stopped_repeating", "attributed_indexes")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    ABSTAINED_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_REASON_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_NAMES_FIELD_NUMBER: _ClassVar[int]
    CITED_INDEXES_FIELD_NUMBER: _ClassVar[int]
    INVALID_CITATIONS_FIELD_NUMBER: _ClassVar[int]
    STOPPED_REPEATING_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTED_INDEXES_FIELD_NUMBER: _ClassVar[int]
    finish_reason: _common_pb2.FinishReason
    usage: _common_pb2.Usage
    timings: StageTimings
    abstained: bool
    abstain_reason: AbstainReason
    unknown_names: _containers.RepeatedScalarFieldContainer[str]
    cited_indexes: _containers.RepeatedScalarFieldContainer[int]
    invalid_citations: _containers.RepeatedScalarFieldContainer[int]
    stopped_repeating: bool
    attributed_indexes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., abstained: _Optional[bool] = ..., abstain_reason: _Optional[_Union[AbstainReason, str]] = ..., unknown_names: _Optional[_Iterable[str]] = ..., cited_indexes: _Optional[_Iterable[int]] = ..., invalid_citations: _Optional[_Iterable[int]] = ..., stopped_repeating: _Optional[bool] = ..., attributed_indexes: _Optional[_Iterable[int]] = ...) -> None: ...

class AskResponse(_message.Message):
    __slots__ = ("citations", "delta", "finished")
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    citations: Citations
    delta: str
    finished: AskFinished
    def __init__(self, citations: _Optional[_Union[Citations, _Mapping]] = ..., delta: _Optional[str] = ..., finished: _Optional[_Union[AskFinished, _Mapping]] = ...) -> None: ...

class AskUnaryRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: AskRequest
    def __init__(self, request: _Optional[_Union[AskRequest, _Mapping]] = ...) -> None: ...

class AskUnaryResponse(_message.Message):
    __slots__ = ("answer", "citations", "finished")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    answer: str
    citations: _containers.RepeatedCompositeFieldContainer[Citation]
    finished: AskFinished
    def __init__(self, answer: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[Citation, _Mapping]]] = ..., finished: _Optional[_Union[AskFinished, _Mapping]] = ...) -> None: ...

class GatewayServiceSearchRequest(_message.Message):
    __slots__ = ("collection", "query", "top_k", "mode", "filter", "fusion", "rerank", "extra_collections", "identifier_boost", "context_top_k")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    EXTRA_COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_BOOST_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOP_K_FIELD_NUMBER: _ClassVar[int]
    collection: str
    query: str
    top_k: int
    mode: _common_pb2.SearchMode
    filter: _common_pb2.MetadataFilter
    fusion: _common_pb2.Fusion
    rerank: _common_pb2.Rerank
    extra_collections: _containers.RepeatedScalarFieldContainer[str]
    identifier_boost: _common_pb2.IdentifierBoost
    context_top_k: int
    def __init__(self, collection: _Optional[str] = ..., query: _Optional[str] = ..., top_k: _Optional[int] = ..., mode: _Optional[_Union[_common_pb2.SearchMode, str]] = ..., filter: _Optional[_Union[_common_pb2.MetadataFilter, _Mapping]] = ..., fusion: _Optional[_Union[_common_pb2.Fusion, _Mapping]] = ..., rerank: _Optional[_Union[_common_pb2.Rerank, _Mapping]] = ..., extra_collections: _Optional[_Iterable[str]] = ..., identifier_boost: _Optional[_Union[_common_pb2.IdentifierBoost, str]] = ..., context_top_k: _Optional[int] = ...) -> None: ...

class SearchTimings(_message.Message):
    __slots__ = ("embed_ms", "retrieve_ms", "rerank_ms", "total_ms")
    EMBED_MS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVE_MS_FIELD_NUMBER: _ClassVar[int]
    RERANK_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    embed_ms: float
    retrieve_ms: float
    rerank_ms: float
    total_ms: float
    def __init__(self, embed_ms: _Optional[float] = ..., retrieve_ms: _Optional[float] = ..., rerank_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class GatewayServiceSearchResponse(_message.Message):
    __slots__ = ("hits", "abstain_reason", "unknown_names", "timings")
    HITS_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_REASON_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_NAMES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredChunk]
    abstain_reason: AbstainReason
    unknown_names: _containers.RepeatedScalarFieldContainer[str]
    timings: SearchTimings
    def __init__(self, hits: _Optional[_Iterable[_Union[_common_pb2.ScoredChunk, _Mapping]]] = ..., abstain_reason: _Optional[_Union[AbstainReason, str]] = ..., unknown_names: _Optional[_Iterable[str]] = ..., timings: _Optional[_Union[SearchTimings, _Mapping]] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "model", "description", "chunk_count", "document_count", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: _common_pb2.ModelIdentity
    description: str
    chunk_count: int
    document_count: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelIdentity, _Mapping]] = ..., description: _Optional[str] = ..., chunk_count: _Optional[int] = ..., document_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GatewayServiceCreateCollectionRequest(_message.Message):
    __slots__ = ("name", "description", "exist_ok")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXIST_OK_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    exist_ok: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., exist_ok: _Optional[bool] = ...) -> None: ...

class GatewayServiceCreateCollectionResponse(_message.Message):
    __slots__ = ("collection", "created")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    collection: CollectionInfo
    created: bool
    def __init__(self, collection: _Optional[_Union[CollectionInfo, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GatewayServiceListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GatewayServiceListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class GatewayServiceDescribeCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GatewayServiceDescribeCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: CollectionInfo
    def __init__(self, collection: _Optional[_Union[CollectionInfo, _Mapping]] = ...) -> None: ...

class GatewayServiceDropCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GatewayServiceDropCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DocumentInfo(_message.Message):
    __slots__ = ("doc_id", "title", "source", "doc_hash", "chunk_count", "tags", "metadata", "index_time")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DOC_HASH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    INDEX_TIME_FIELD_NUMBER: _ClassVar[int]
    doc_id: str
    title: str
    source: str
    doc_hash: str
    chunk_count: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    index_time: _timestamp_pb2.Timestamp
    def __init__(self, doc_id: _Optional[str] = ..., title: _Optional[str] = ..., source: _Optional[str] = ..., doc_hash: _Optional[str] = ..., chunk_count: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., index_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GatewayServiceListDocumentsRequest(_message.Message):
    __slots__ = ("collection", "page_size", "page_token")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page_size: int
    page_token: str
    def __init__(self, collection: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GatewayServiceListDocumentsResponse(_message.Message):
    __slots__ = ("documents", "next_page_token")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[DocumentInfo]
    next_page_token: str
    def __init__(self, documents: _Optional[_Iterable[_Union[DocumentInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GatewayServiceGetDocumentRequest(_message.Message):
    __slots__ = ("collection", "doc_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    doc_id: str
    def __init__(self, collection: _Optional[str] = ..., doc_id: _Optional[str] = ...) -> None: ...

class GatewayServiceGetDocumentResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: DocumentInfo
    def __init__(self, document: _Optional[_Union[DocumentInfo, _Mapping]] = ...) -> None: ...

class GatewayServiceUpdateDocumentRequest(_message.Message):
    __slots__ = ("collection", "doc_id", "patch")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    collection: str
    doc_id: str
    patch: _common_pb2.DocumentPatch
    def __init__(self, collection: _Optional[str] = ..., doc_id: _Optional[str] = ..., patch: _Optional[_Union[_common_pb2.DocumentPatch, _Mapping]] = ...) -> None: ...

class GatewayServiceUpdateDocumentResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: DocumentInfo
    def __init__(self, document: _Optional[_Union[DocumentInfo, _Mapping]] = ...) -> None: ...

class IngestJobCounts(_message.Message):
    __slots__ = ("total", "pending", "written", "unchanged", "failed", "deleted", "chunks_written", "chunks_deleted")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_DELETED_FIELD_NUMBER: _ClassVar[int]
    total: int
    pending: int
    written: int
    unchanged: int
    failed: int
    deleted: int
    chunks_written: int
    chunks_deleted: int
    def __init__(self, total: _Optional[int] = ..., pending: _Optional[int] = ..., written: _Optional[int] = ..., unchanged: _Optional[int] = ..., failed: _Optional[int] = ..., deleted: _Optional[int] = ..., chunks_written: _Optional[int] = ..., chunks_deleted: _Optional[int] = ...) -> None: ...

class IngestJob(_message.Message):
    __slots__ = ("id", "collection", "status", "delete_missing", "doc_id_prefix", "counts", "error", "cancel_requested", "create_time", "start_time", "finish_time", "attempts")
    ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DELETE_MISSING_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    collection: str
    status: IngestJobStatus
    delete_missing: bool
    doc_id_prefix: str
    counts: IngestJobCounts
    error: str
    cancel_requested: bool
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    attempts: int
    def __init__(self, id: _Optional[str] = ..., collection: _Optional[str] = ..., status: _Optional[_Union[IngestJobStatus, str]] = ..., delete_missing: _Optional[bool] = ..., doc_id_prefix: _Optional[str] = ..., counts: _Optional[_Union[IngestJobCounts, _Mapping]] = ..., error: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ...) -> None: ...

class GatewayServiceCreateIngestJobRequest(_message.Message):
    __slots__ = ("collection", "documents", "delete_missing", "doc_id_prefix", "more_documents")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    DELETE_MISSING_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    MORE_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    delete_missing: bool
    doc_id_prefix: str
    more_documents: bool
    def __init__(self, collection: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., delete_missing: _Optional[bool] = ..., doc_id_prefix: _Optional[str] = ..., more_documents: _Optional[bool] = ...) -> None: ...

class GatewayServiceCreateIngestJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: IngestJob
    def __init__(self, job: _Optional[_Union[IngestJob, _Mapping]] = ...) -> None: ...

class GatewayServiceAddIngestJobDocumentsRequest(_message.Message):
    __slots__ = ("job_id", "documents", "last")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    last: bool
    def __init__(self, job_id: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., last: _Optional[bool] = ...) -> None: ...

class GatewayServiceAddIngestJobDocumentsResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: IngestJob
    def __init__(self, job: _Optional[_Union[IngestJob, _Mapping]] = ...) -> None: ...

class GatewayServiceGetIngestJobRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GatewayServiceGetIngestJobResponse(_message.Message):
    __slots__ = ("job", "documents", "next_page_token")
    JOB_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job: IngestJob
    documents: _containers.RepeatedCompositeFieldContainer[DocumentResult]
    next_page_token: str
    def __init__(self, job: _Optional[_Union[IngestJob, _Mapping]] = ..., documents: _Optional[_Iterable[_Union[DocumentResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GatewayServiceListIngestJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "status")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    status: IngestJobStatus
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[IngestJobStatus, str]] = ...) -> None: ...

class GatewayServiceListIngestJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[IngestJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[IngestJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GatewayServiceCancelIngestJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GatewayServiceCancelIngestJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: IngestJob
    def __init__(self, job: _Optional[_Union[IngestJob, _Mapping]] = ...) -> None: ...
