"""The HTTP API's wire types: OpenAI's chat completions, models and embeddings, and
ragplane's own search, as pydantic models. FastAPI validates requests against them and
writes the OpenAPI document from them; serving.py translates them to api.py's types.

Unknown fields of the OpenAI-shaped requests are ignored, as OpenAI-compatible servers
do (clients send fields like `seed` or `presence_penalty`); the ones that would change
the response's shape (n > 1, tools, logprobs, JSON output) are refused. ragplane's own
objects (`ragplane`, the search request) refuse unknown fields, so a typo is an error.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

# The model name that means "the gateway's default collection", for clients that must
# name a model.
DEFAULT_MODEL = "ragplane"


class WireModel(BaseModel):
    """A response object; the fields named in `_omit_when_none` are left out when None,
    as OpenAI leaves out what does not apply (e.g. `usage` without include_usage)."""

    _omit_when_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        omit = self._omitted()
        return self._ordered({k: v for k, v in data.items() if v is not None or k not in omit})

    def _omitted(self) -> frozenset[str]:
        return self._omit_when_none

    def _ordered(self, data: dict[str, Any]) -> dict[str, Any]:
        return data


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- retrieval options, shared by chat (as `ragplane`) and search ----


class MetadataFilter(StrictModel):
    """Restricts retrieval to some chunks; empty fields do not restrict."""

    doc_ids: list[str] = Field(default_factory=list, description="Only chunks of these documents.")
    source_prefix: str = Field(default="", description="Only chunks whose source starts with this.")
    tags: list[str] = Field(
        default_factory=list, description="Only chunks of documents with one of these tags."
    )


class FusionOptions(StrictModel):
    """How hybrid search fuses its dense and keyword rankings (server defaults when unset)."""

    method: Literal["rrf", "weighted"] | None = None
    rrf_k: int = Field(default=0, ge=0, description="RRF's k; 0 means 60.")
    dense_weight: float = Field(
        default=0.0, ge=0.0, description="Weighted fusion; both 0: 0.5 each."
    )
    keyword_weight: float = Field(default=0.0, ge=0.0)


class RerankOptions(StrictModel):
    enabled: bool | None = Field(
        default=None, description="Rerank the fused candidates; None: default."
    )
    candidates: int = Field(
        default=0, ge=0, description="Candidates rescored; 0: the server's default."
    )
    weight: float = Field(
        default=0.0, ge=0.0, description="Weight of the reranker's order (0-1); 0: the default."
    )


class RetrievalOptions(StrictModel):
    """Where and how to look; every field left out takes the server's default."""

    collections: list[str] = Field(
        default_factory=list,
        description="More collections to search along with the main one (same embedding model).",
    )
    top_k: int | None = Field(
        default=None, ge=1, description="Chunks to retrieve: at most 50 for chat, 100 for search."
    )
    mode: Literal["dense", "keyword", "hybrid"] | None = None
    filter: MetadataFilter = Field(default_factory=MetadataFilter)
    fusion: FusionOptions = Field(default_factory=FusionOptions)
    rerank: bool | RerankOptions | None = Field(
        default=None, description="true/false, or the reranker's options."
    )
    identifier_boost: bool | None = Field(
        default=None, description="Rank first the chunks that mention the query's identifiers."
    )


# ---- chat completions ----


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description="user or assistant; system, developer and tool messages are refused."
    )
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request; the last message is the question."""

    messages: list[ChatMessage] = Field(
        min_length=1, description="Earlier turns, then the question as the last user message."
    )
    model: str | None = Field(
        default=None,
        description=f"A collection name; omitted or {DEFAULT_MODEL!r}: the server's default.",
    )
    temperature: float | None = Field(
        default=None, ge=0.0, le=2.0, description="Sampling temperature; default 0 (greedy), not 1."
    )
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(
        default=None, ge=1, description="Deprecated by OpenAI; same as below."
    )
    max_completion_tokens: int | None = Field(
        default=None, ge=1, description="Answer length limit; the server's default when omitted."
    )
    stop: str | list[str] | None = None
    user: str | None = Field(default=None, description="Accepted for compatibility; not used.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, description="Only 1.")
    tools: list[Any] | None = Field(default=None, description="Not supported.")
    logprobs: bool | None = Field(default=None, description="Not supported (false only).")
    response_format: dict[str, Any] | None = Field(
        default=None, description='Only {"type": "text"}.'
    )
    ragplane: RetrievalOptions | None = Field(
        default=None,
        description="Retrieval options (openai client: extra_body={'ragplane': {...}}).",
    )

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only n=1 is supported: one answer per request")
        return value

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("tools are not supported")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("logprobs are not supported")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError('only {"type": "text"} is supported')
        return value


class Citation(BaseModel):
    """A chunk given to the model; `[index]` in the answer refers to it."""

    index: int
    doc_id: str
    title: str
    source: str
    section: str
    chunk_id: str
    collection: str
    score: float = Field(description="The retrieval score (scales differ by mode).")
    relevance: float = Field(description="Query-chunk cosine similarity, whatever the mode.")
    text: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timings(BaseModel):
    """Where the gateway spent the request's time, in milliseconds."""

    embed_ms: float
    retrieve_ms: float
    rerank_ms: float
    prompt_ms: float = 0.0
    time_to_first_token_ms: float = 0.0
    generate_ms: float = 0.0
    total_ms: float


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class AnswerOutcome(WireModel):
    """What ragplane adds to OpenAI's completion: whether it abstained and why. On the
    completion, and on the last chunk of a stream (with the finish reason) only."""

    abstained: bool | None = Field(
        default=None,
        description="True when the corpus does not answer the question ('I don't know').",
    )
    abstain_reason: Literal["no_hits", "low_relevance", "unknown_names"] | None = None
    unknown_names: list[str] | None = Field(
        default=None, description="The question's names the corpus does not know."
    )
    retrieval_query: str | None = Field(
        default=None,
        description="The search query, when earlier turns made the question self-contained.",
    )
    cited_indexes: list[int] | None = Field(
        default=None,
        description="The citations the answer's [n] markers point at, in order of first mention.",
    )
    invalid_citations: list[int] | None = Field(
        default=None,
        description="Numbers in the answer's [n] markers that point at no citation; the "
        "answer text is not rewritten.",
    )
    stopped_repeating: bool | None = Field(
        default=None,
        description="True when the generator stopped the answer because it kept repeating "
        "itself (finish_reason is then stop).",
    )
    attributed_indexes: list[int] | None = Field(
        default=None,
        description="Of cited_indexes, the citations whose [n] markers the gateway added "
        "where a passage supports a sentence the model left unmarked.",
    )
    timings: Timings | None = None

    def _omitted(self) -> frozenset[str]:
        if self.abstained is None:
            return self._omit_when_none | frozenset(AnswerOutcome.model_fields)
        return self._omit_when_none

    def _ordered(self, data: dict[str, Any]) -> dict[str, Any]:
        # After OpenAI's own fields, which a reader of the JSON looks for first.
        ours = AnswerOutcome.model_fields
        return {
            **{k: v for k, v in data.items() if k not in ours},
            **{k: v for k, v in data.items() if k in ours},
        }


class ChatCompletion(AnswerOutcome):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="The collection that answered.")
    choices: list[Choice]
    usage: Usage
    citations: list[Citation]


class ChunkDelta(WireModel):
    _omit_when_none = frozenset({"role", "content"})

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(AnswerOutcome):
    """One server-sent event of a streamed answer: the first carries the citations, the
    last choice the finish reason and ragplane's outcome fields, and with include_usage
    one more, with no choices, the usage."""

    _omit_when_none = frozenset({"citations", "usage"})

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    citations: list[Citation] | None = None


# ---- models ----


class ModelCard(BaseModel):
    """A collection, as OpenAI lists a model."""

    id: str = Field(description="The collection name: chat completions' `model`.")
    object: Literal["model"] = "model"
    created: int = Field(default=0, description="Always 0: collections do not record when.")
    owned_by: Literal["ragplane"] = "ragplane"
    embedding_model: str = Field(description="The embedding model the collection was made with.")
    embedding_model_revision: str
    dimension: int
    chunk_count: int
    default: bool = Field(description=f"The server's default collection (model {DEFAULT_MODEL!r}).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---- embeddings ----


class EmbeddingRequest(BaseModel):
    input: str | list[str] = Field(description="A text or a list of texts (no token arrays).")
    model: str | None = Field(default=None, description="Omitted, or the embedder's model id.")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64: little-endian float32, as OpenAI encodes it."
    )
    dimensions: int | None = Field(
        default=None, ge=1, description="Only the model's own dimension."
    )
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int = Field(description="Tokens of the inputs, by the embedder's tokenizer.")
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# ---- search ----


class SearchRequest(RetrievalOptions):
    """Retrieval only: the chunks an answer would draw on."""

    query: str
    collection: str | None = Field(default=None, description="Omitted: the server's default.")
    context_top_k: int | None = Field(
        default=None,
        ge=1,
        description="Hits an answer would give the model, on which abstain_reason is judged.",
    )


class SearchHit(BaseModel):
    chunk_id: str
    doc_id: str
    title: str
    source: str
    section: str
    position: int
    tags: list[str]
    text: str
    collection: str
    score: float = Field(description="The retrieval score (scales differ by mode).")
    relevance: float = Field(description="Query-chunk cosine similarity, whatever the mode.")
    rerank_score: float | None = Field(default=None, description="Set when the hits were reranked.")


class SearchTimings(BaseModel):
    embed_ms: float
    retrieve_ms: float
    rerank_ms: float
    total_ms: float


class SearchResponse(BaseModel):
    object: Literal["search.result"] = "search.result"
    hits: list[SearchHit] = Field(description="In final order.")
    abstain_reason: Literal["no_hits", "low_relevance", "unknown_names"] | None = Field(
        description="Why an answer would be 'I don't know' on these hits; null: it would not."
    )
    unknown_names: list[str]
    timings: SearchTimings


# ---- collections and documents ----


class CollectionCreateRequest(StrictModel):
    name: str = Field(description="Letters, digits and _, not starting with a digit.")
    description: str = Field(default="", description="What the collection holds (1024 bytes).")
    exist_ok: bool = Field(
        default=False, description="An existing collection with the embedder's model is no error."
    )


class EmbeddingModel(BaseModel):
    id: str
    revision: str
    dimension: int


class CollectionObject(BaseModel):
    object: Literal["collection"] = "collection"
    name: str
    description: str
    embedding_model: EmbeddingModel
    chunk_count: int
    document_count: int
    create_time: str | None = Field(description="RFC 3339, UTC; null if not recorded.")
    update_time: str | None = Field(description="Last document write, delete or update.")
    created: bool | None = Field(
        default=None, description="POST only: false when it existed already (exist_ok)."
    )


class CollectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CollectionObject]


class CollectionDeleted(BaseModel):
    object: Literal["collection.deleted"] = "collection.deleted"
    name: str
    deleted: bool = True


class DocumentObject(BaseModel):
    object: Literal["document"] = "document"
    doc_id: str
    title: str
    source: str
    doc_hash: str = Field(description="Changes when the content or how it is indexed changes.")
    chunk_count: int
    tags: list[str]
    metadata: dict[str, str]
    index_time: str | None = Field(description="When its chunks were last written (RFC 3339).")


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentObject] = Field(description="By doc_id.")
    next_page_token: str | None = Field(
        description="Pass as page_token for the next page; null on the last."
    )


class DocumentUpdateRequest(StrictModel):
    """Each field given replaces the stored one; the chunks keep their text and vectors."""

    tags: list[str] | None = None
    metadata: dict[str, str] | None = None
    title: str | None = None


class DocumentDeleted(BaseModel):
    object: Literal["document.deleted"] = "document.deleted"
    doc_id: str
    chunks_deleted: int


class UploadResult(BaseModel):
    doc_id: str
    status: Literal["written", "unchanged", "failed"]
    chunks_written: int
    chunks_deleted: int
    error: str | None = None


class UploadResponse(BaseModel):
    object: Literal["list"] = "list"
    collection: str
    data: list[UploadResult] = Field(description="One per file, in the order sent.")


# ---- ingestion jobs ----

JobStatus = Literal["receiving", "queued", "running", "succeeded", "failed", "cancelled"]


class JobDocument(StrictModel):
    """A document of a job: text in `content`, or any bytes (PDF, DOCX) in
    `content_base64`."""

    doc_id: str
    content: str | None = Field(default=None, description="UTF-8 text.")
    content_base64: str | None = Field(default=None, description="The bytes, base64.")
    source: str = ""
    title: str = ""
    media_type: str = Field(default="", description="Guessed from source when empty.")
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)


class JobCreateRequest(StrictModel):
    documents: list[JobDocument] = Field(
        default_factory=list, description="At most 1000; more with more_documents."
    )
    delete_missing: bool = Field(
        default=False,
        description="A sync: the collection's documents under doc_id_prefix that the job "
        "does not name are deleted once its documents are in.",
    )
    doc_id_prefix: str = ""
    more_documents: bool = Field(
        default=False,
        description="Keep the job open: add documents with POST /v1/jobs/{id}/documents, "
        "the last call with last=true.",
    )


class JobDocumentsRequest(StrictModel):
    documents: list[JobDocument] = Field(default_factory=list)
    last: bool = Field(default=False, description="The last documents: the job is queued.")


class JobCounts(BaseModel):
    total: int = Field(description="The job's documents (a sync's deletions not included).")
    pending: int
    written: int
    unchanged: int
    failed: int
    deleted: int = Field(description="Gone from the source, deleted from the collection.")
    chunks_written: int
    chunks_deleted: int


class JobDocumentResult(BaseModel):
    doc_id: str
    status: Literal["pending", "written", "unchanged", "failed", "deleted"]
    chunks_written: int
    chunks_deleted: int
    error: str | None = None


class JobObject(BaseModel):
    object: Literal["ingest_job"] = "ingest_job"
    id: str
    collection: str
    status: JobStatus
    delete_missing: bool
    doc_id_prefix: str
    counts: JobCounts
    error: str | None = None
    cancel_requested: bool = Field(description="The job stops after its current sub-batch.")
    create_time: str | None
    start_time: str | None
    finish_time: str | None
    attempts: int = Field(description="More than 1: resumed after a gateway stopped or died.")
    documents: list[JobDocumentResult] | None = Field(
        default=None, description="GET /v1/jobs/{id} only: a page of outcomes, by position."
    )
    next_page_token: str | None = Field(
        default=None, description="GET /v1/jobs/{id}: the next page of documents; null: last."
    )


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobObject] = Field(description="Newest first.")
    next_page_token: str | None = None


# ---- errors ----


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body: what every non-2xx response carries."""

    error: ErrorDetail
