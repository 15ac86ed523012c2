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

class AbstainReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ABSTAIN_REASON_UNSPECIFIED: _ClassVar[AbstainReason]
    ABSTAIN_REASON_NO_HITS: _ClassVar[AbstainReason]
    ABSTAIN_REASON_LOW_RELEVANCE: _ClassVar[AbstainReason]
    ABSTAIN_REASON_UNKNOWN_NAMES: _ClassVar[AbstainReason]
INGEST_STATUS_UNSPECIFIED: IngestStatus
INGEST_STATUS_WRITTEN: IngestStatus
INGEST_STATUS_UNCHANGED: IngestStatus
INGEST_STATUS_FAILED: IngestStatus
ABSTAIN_REASON_UNSPECIFIED: AbstainReason
ABSTAIN_REASON_NO_HITS: AbstainReason
ABSTAIN_REASON_LOW_RELEVANCE: AbstainReason
ABSTAIN_REASON_UNKNOWN_NAMES: AbstainReason

class Document(_message.Message):
    __slots__ = ("doc_id", "source", "title", "media_type", "content", "tags")
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    doc_id: str
    source: str
    title: str
    media_type: str
    content: bytes
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, doc_id: _Optional[str] = ..., source: _Optional[str] = ..., title: _Optional[str] = ..., media_type: _Optional[str] = ..., content: _Optional[bytes] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

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
    __slots__ = ("finish_reason", "usage", "timings", "abstained", "abstain_reason", "unknown_names")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    ABSTAINED_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_REASON_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_NAMES_FIELD_NUMBER: _ClassVar[int]
    finish_reason: _common_pb2.FinishReason
    usage: _common_pb2.Usage
    timings: StageTimings
    abstained: bool
    abstain_reason: AbstainReason
    unknown_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., abstained: _Optional[bool] = ..., abstain_reason: _Optional[_Union[AbstainReason, str]] = ..., unknown_names: _Optional[_Iterable[str]] = ...) -> None: ...

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
