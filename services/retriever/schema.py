"""The Milvus collection a ragplane collection is, and the typed chunk rows it holds.

One collection per corpus, bound to one embedding model: every chunk's metadata, its
dense vector, and the sparse BM25 vector Milvus derives from its keywords.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymilvus import DataType, Function, FunctionType, MilvusClient

from ragplane.names import normal

# The embedding model is a collection property: Milvus Lite persists properties across
# restarts (it drops the collection description), and Milvus servers keep custom ones.
MODEL_PROPERTY = "ragplane.embedding_model"
SCHEMA_PROPERTY = "ragplane.schema_version"
# Milvus Lite drops a collection's description, so it is a property too; times are Unix
# milliseconds, the update time rewritten by every write, delete and update.
DESCRIPTION_PROPERTY = "ragplane.description"
CREATE_TIME_PROPERTY = "ragplane.create_time_ms"
UPDATE_TIME_PROPERTY = "ragplane.update_time_ms"
MAX_DESCRIPTION_BYTES = 1024
# 2 added the tags array; collections of schema 1 still serve, without tags.
# 3 added the keywords field: BM25 over a chunk's title and section as well as its text
# (a reference page's name is in its title, not in every chunk). Collections of schema 1
# and 2 still serve, with BM25 over the text alone.
# 4 added each document's metadata (a JSON object of strings) and its chunks' index time.
SCHEMA_VERSION = "4"
TAGS_SCHEMA = 2
KEYWORDS_SCHEMA = 3
METADATA_SCHEMA = 4

# Unicode word tokenizer + lowercase: max_wal_senders, 23505 and pg_dump stay single
# terms, --no-owner becomes "no" "owner" (both kept: no stop-word filter). Milvus Lite
# only has "standard" and "jieba"; a whitespace tokenizer would also glue punctuation
# to words ("max_wal_senders," would not match "max_wal_senders").
TEXT_ANALYZER: dict[str, Any] = {"tokenizer": "standard", "filter": ["lowercase"]}

# VARCHAR limits; Milvus counts UTF-8 bytes.
MAX_BYTES = {
    "id": 512,
    "doc_id": 2048,
    "doc_hash": 128,
    "title": 2048,
    "source": 4096,
    "section": 2048,
    "content_hash": 128,
    "text": 65535,
    "keywords": 65535,
    "tag": 128,
    "metadata_key": 256,
    "metadata_value": 4096,
}
# Every chunk of a document stores its hash with the document's chunk count,
# "<doc_hash>#<count>": a document whose write was cut short (the retriever or Milvus
# killed between two upsert batches) has fewer chunks than it says, and is reported with
# no hash, as changed, so that the next ingest writes it whole instead of skipping it.
COUNT_MARK = "#"
# Room kept in the doc_hash field for the mark and a count.
COUNT_MARK_BYTES = 12
MAX_TAGS = 32
MAX_METADATA_KEYS = 32
# What a search returns of a chunk (tags too, where the schema has them).
CHUNK_FIELDS = [
    "id",
    "doc_id",
    "doc_hash",
    "title",
    "source",
    "section",
    "position",
    "content_hash",
    "text",
]
TAGS_FIELD = "tags"
KEYWORDS_FIELD = "keywords"
METADATA_FIELD = "metadata"
INDEX_TIME_FIELD = "index_time_ms"
DENSE_FIELD = "dense"
SPARSE_FIELD = "sparse"


@dataclass(frozen=True)
class StoredChunk:
    """One chunk as a collection stores it (its vectors aside)."""

    id: str
    doc_id: str
    title: str
    source: str
    section: str
    position: int
    content_hash: str
    text: str
    doc_hash: str
    tags: tuple[str, ...] = ()
    # The document's, on every chunk of it (schema 4 and later).
    metadata: Mapping[str, str] = field(default_factory=dict)
    # When it was written (Unix ms; 0 in collections before schema 4).
    index_time_ms: int = 0

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any], chunk_id: str) -> StoredChunk:
        """The chunk from a search hit's or a query's entity (schema 1 entities have no
        tags, those before 4 no metadata)."""
        return cls(
            id=chunk_id,
            doc_id=entity["doc_id"],
            title=entity["title"],
            source=entity["source"],
            section=entity["section"],
            position=int(entity["position"]),
            content_hash=entity["content_hash"],
            text=entity["text"],
            doc_hash=unstamped(entity["doc_hash"])[0],
            tags=tuple(entity.get(TAGS_FIELD) or ()),
            metadata=dict(entity.get(METADATA_FIELD) or {}),
            index_time_ms=int(entity.get(INDEX_TIME_FIELD) or 0),
        )

    def named_text(self) -> str:
        """Title, section and text, as names are matched in them (ragplane.names)."""
        return normal(f"{self.title} {self.section} {self.text}")


def stamped(doc_hash: str, chunk_count: int) -> str:
    """The doc_hash field of each of a document's chunk_count chunks."""
    return f"{doc_hash}{COUNT_MARK}{chunk_count}"


def unstamped(stored: str) -> tuple[str, int | None]:
    """The document's hash and chunk count from a stored doc_hash field; the count is
    None for chunks written before counts were stamped."""
    doc_hash, mark, count = stored.rpartition(COUNT_MARK)
    if mark and count.isdigit():
        return doc_hash, int(count)
    return stored, None


@dataclass(frozen=True)
class IndexedChunk:
    """A chunk to write, with its dense vector."""

    chunk: StoredChunk
    vector: list[float]

    def row(self, schema_version: int, index_time_ms: int = 0) -> dict[str, Any]:
        """The Milvus row for a collection of that schema version, written at
        index_time_ms (the chunk's own when 0)."""
        c = self.chunk
        row: dict[str, Any] = {
            "id": c.id,
            "doc_id": c.doc_id,
            "doc_hash": c.doc_hash,
            "title": c.title,
            "source": c.source,
            "section": c.section,
            "content_hash": c.content_hash,
            "text": c.text,
            "position": c.position,
            DENSE_FIELD: self.vector,
        }
        if schema_version >= TAGS_SCHEMA:
            row[TAGS_FIELD] = list(c.tags)
        if schema_version >= KEYWORDS_SCHEMA:
            row[KEYWORDS_FIELD] = keywords(c)
        if schema_version >= METADATA_SCHEMA:
            row[METADATA_FIELD] = dict(c.metadata)
            row[INDEX_TIME_FIELD] = index_time_ms or c.index_time_ms
        return row


def keywords(chunk: StoredChunk) -> str:
    """The text BM25 indexes for a chunk: its title, section and text, cut to the
    field's limit at a character boundary (a chunk's text alone always fits)."""
    joined = f"{chunk.title}\n{chunk.section}\n\n{chunk.text}"
    data = joined.encode()
    if len(data) <= MAX_BYTES[KEYWORDS_FIELD]:
        return joined
    return data[: MAX_BYTES[KEYWORDS_FIELD]].decode(errors="ignore")


def output_fields(with_tags: bool, with_vectors: bool) -> list[str]:
    """The fields a search returns: the chunk, its tags and, if asked, its dense vector."""
    fields = [*CHUNK_FIELDS, TAGS_FIELD] if with_tags else list(CHUNK_FIELDS)
    if with_vectors:
        fields.append(DENSE_FIELD)
    return fields


def collection_schema(client: MilvusClient, dimension: int) -> Any:
    """The schema of a new collection (SCHEMA_VERSION) for vectors of `dimension`."""
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_BYTES["id"])
    for name in ("doc_id", "doc_hash", "title", "source", "section", "content_hash"):
        schema.add_field(name, DataType.VARCHAR, max_length=MAX_BYTES[name])
    schema.add_field("position", DataType.INT64)
    schema.add_field("text", DataType.VARCHAR, max_length=MAX_BYTES["text"])
    # What BM25 reads: title, section and text (keywords()); stored, never returned.
    schema.add_field(
        KEYWORDS_FIELD,
        DataType.VARCHAR,
        max_length=MAX_BYTES[KEYWORDS_FIELD],
        enable_analyzer=True,
        analyzer_params=TEXT_ANALYZER,
    )
    schema.add_field(
        TAGS_FIELD,
        DataType.ARRAY,
        element_type=DataType.VARCHAR,
        max_capacity=MAX_TAGS,
        max_length=MAX_BYTES["tag"],
    )
    schema.add_field(METADATA_FIELD, DataType.JSON)
    schema.add_field(INDEX_TIME_FIELD, DataType.INT64)
    schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field(DENSE_FIELD, DataType.FLOAT_VECTOR, dim=dimension)
    schema.add_function(
        Function(
            name="text_bm25",
            function_type=FunctionType.BM25,
            input_field_names=[KEYWORDS_FIELD],
            output_field_names=[SPARSE_FIELD],
        )
    )
    return schema


def index_params(client: MilvusClient) -> Any:
    """The indexes of a new collection: dense (cosine), sparse (BM25) and doc_id."""
    index = client.prepare_index_params()
    index.add_index(DENSE_FIELD, index_type="AUTOINDEX", metric_type="COSINE")
    index.add_index(SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    # doc_id filters run on every upsert and delete.
    index.add_index("doc_id", index_type="INVERTED")
    return index


@dataclass(frozen=True)
class DocumentChunks:
    """All chunks of one document: after a write the document has exactly these."""

    doc_id: str
    chunks: list[IndexedChunk]


def stored_fields(schema_version: int, with_vectors: bool = False) -> list[str]:
    """Every field a collection of that schema version stores for a chunk (its dense
    vector only if asked): what rewriting a chunk in place reads back."""
    fields = list(CHUNK_FIELDS)
    if schema_version >= TAGS_SCHEMA:
        fields.append(TAGS_FIELD)
    if schema_version >= METADATA_SCHEMA:
        fields += [METADATA_FIELD, INDEX_TIME_FIELD]
    if with_vectors:
        fields.append(DENSE_FIELD)
    return fields
