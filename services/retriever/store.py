"""Every Milvus call the retriever makes: model-bound collections, chunk rows, search.

pymilvus' MilvusClient is synchronous, so each call runs in a dedicated thread pool and
the event loop never blocks. (AsyncMilvusClient also works against Milvus Lite, but it
has no query_iterator, which listing documents past Milvus' 16384-row query window
needs, and it was no faster.) Milvus Lite and a Milvus server are the same code with
another URI; every call carries the configured timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
from pymilvus import (
    AnnSearchRequest,
    MilvusClient,
    MilvusException,
    RRFRanker,
    Status,
    WeightedRanker,
)
from pymilvus.exceptions import ErrorCode

from ragplane.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    RagplaneError,
    Unavailable,
)
from ragplane.retriever import schema
from ragplane.retriever.schema import DENSE_FIELD, SPARSE_FIELD, DocumentChunks, StoredChunk

log = logging.getLogger(__name__)
T = TypeVar("T")

RRF_K = 60
WRITE_BATCH_ROWS = 500
QUERY_PAGE_ROWS = 1000


@dataclass(frozen=True)
class Fusion:
    """How hybrid search fuses its two rankings: "rrf" with k, or "weighted"."""

    method: str = "rrf"
    rrf_k: int = RRF_K
    dense_weight: float = 0.5
    keyword_weight: float = 0.5
    # Candidates each side brings to fusion: this many per hit asked for, at least
    # min_depth. A server setting; requests choose the method, not the depth.
    depth_factor: int = 3
    min_depth: int = 20

    def ranker(self) -> Any:
        if self.method == "weighted":
            return WeightedRanker(self.dense_weight, self.keyword_weight)
        return RRFRanker(self.rrf_k)


# Milvus' merr code for "collection not loaded", which pymilvus' ErrorCode does not name
# (its COLLECTION_NOT_FOUND, 100, is merr's too).
COLLECTION_NOT_LOADED = 101
# How long a call keeps retrying while Milvus is unreachable (e.g. restarting).
RECONNECT_WINDOW_S = 3.0


@dataclass(frozen=True)
class ModelRecord:
    """The embedding model a collection is bound to."""

    id: str
    revision: str
    weights_sha256: str
    dimension: int

    def label(self) -> str:
        name = f"{self.id}@{self.revision}" if self.revision else self.id
        return f"{name} ({self.dimension}-d)"

    def matches(self, other: ModelRecord) -> bool:
        """Same model for search purposes: id, revision and dimension agree."""
        return (self.id, self.revision, self.dimension) == (
            other.id,
            other.revision,
            other.dimension,
        )


@dataclass(frozen=True)
class Hit:
    """One search result: the chunk, its score (higher is better) and, when the search
    asked for it, its dense vector."""

    chunk: StoredChunk
    score: float
    vector: Sequence[float] | None = None


@dataclass
class DocumentSummary:
    """What the store knows about one document."""

    doc_id: str
    doc_hash: str
    chunk_count: int
    title: str
    source: str
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    # The latest of its chunks' (0: written before collections recorded it).
    index_time_ms: int = 0


@dataclass(frozen=True)
class CollectionRecord:
    """What a collection records about itself (its properties): the model (None if
    ragplane did not create it), description and create and update times (Unix ms, 0
    when it predates them)."""

    model: ModelRecord | None
    description: str = ""
    create_time_ms: int = 0
    update_time_ms: int = 0


@dataclass(frozen=True)
class DocumentPatch:
    """A change to a stored document: each field that is not None replaces it."""

    tags: tuple[str, ...] | None = None
    metadata: dict[str, str] | None = None
    title: str | None = None


# Filter expressions --------------------------------------------------------------


def string_literal(value: str) -> str:
    """A Milvus filter string literal; quotes and backslashes cannot end it early."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def in_list(field: str, values: Iterable[str]) -> str:
    return f"{field} in [{', '.join(string_literal(v) for v in sorted(set(values)))}]"


def filter_expression(
    doc_ids: Sequence[str] = (), source_prefix: str = "", tags: Sequence[str] = ()
) -> str:
    """The filter for "only these documents", "source starts with" and "has one of these
    tags"; "" matches all."""
    parts = []
    if doc_ids:
        parts.append(in_list("doc_id", doc_ids))
    if tags:
        literals = ", ".join(string_literal(t) for t in sorted(set(tags)))
        parts.append(f"array_contains_any(tags, [{literals}])")
    if source_prefix:
        # A range, not LIKE: Milvus Lite ignores LIKE escapes on unflushed rows, so a
        # prefix holding _ or % would match other sources there.
        parts.append(f"source >= {string_literal(source_prefix)}")
        upper = _prefix_upper_bound(source_prefix)
        if upper is not None:
            parts.append(f"source < {string_literal(upper)}")
    return " and ".join(parts)


def _prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string above every string that starts with prefix (code point order,
    which is also UTF-8 byte order); None if there is none."""
    for i in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[i]) + 1
        if code <= 0x10FFFF:
            if 0xD800 <= code <= 0xDFFF:
                code = 0xE000  # skip the surrogates, which are not characters
            return prefix[:i] + chr(code)
    return None


# The store -----------------------------------------------------------------------


class MilvusStore:
    """Collections bound to one embedding model, holding chunk rows; dense, BM25 and
    hybrid search."""

    def __init__(
        self,
        uri: str,
        token: str,
        timeout_s: float,
        threads: int = 4,
        flush_rows: int = 2000,
        flush_idle_s: float = 2.0,
    ) -> None:
        self.uri = uri
        # Milvus Lite only. It searches the rows it has not flushed one by one, on every
        # search and filtered query, and replays them from its log on every restart: 1,495
        # unflushed rows of 13,785 made a dense search 50 ms instead of 8, and BM25 150 ms
        # instead of 10. So a collection is flushed every flush_rows rows written, and
        # again once its writes have been idle for flush_idle_s, so the tail of an
        # indexing run does not stay unflushed; and each collection once on connect. A
        # Milvus server seals and indexes segments itself and rate-limits flushes, so it
        # is never asked to.
        self._flush_rows = flush_rows
        self._flush_idle_s = flush_idle_s
        self._lite = False
        # Rows written to a collection since its last flush, and its pending idle flush.
        self._unflushed: dict[str, int] = {}
        self._idle_flushes: dict[str, asyncio.Task[None]] = {}
        self._token = token
        self._timeout = timeout_s
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="milvus")
        self._client: MilvusClient | None = None
        self._connect_lock = threading.Lock()
        self._create_lock = asyncio.Lock()
        self._write_locks: dict[str, asyncio.Lock] = {}
        # Schema version and model per collection, as model_of last read them.
        self._schemas: dict[str, str] = {}
        self._models: dict[str, tuple[float, ModelRecord]] = {}

    # Connection and error mapping

    async def start(self) -> None:
        """Connects and loads every collection; if Milvus is down, RPCs report UNAVAILABLE
        and the connection is retried on the next call."""
        route_pymilvus_logs()
        try:
            await self._call("connect", lambda c: None)
        except Unavailable as exc:
            log.warning("%s; will retry on the first request", exc)

    async def reachable(self, wait_s: float = 1.0) -> bool:
        """Whether Milvus accepts connections: the retriever's health follows it (a
        TCP connect, so that a check never waits on pymilvus's own timeouts)."""
        url = urlsplit(self.uri)
        if url.hostname is None:
            return True
        port = url.port or (443 if url.scheme == "https" else 19530)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, port), wait_s)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def close(self) -> None:
        # A pending idle flush is only an optimisation: the rows are in Milvus's log.
        for task in self._idle_flushes.values():
            task.cancel()
        self._idle_flushes.clear()
        await asyncio.get_running_loop().run_in_executor(self._pool, self._disconnect)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _disconnect(self) -> None:
        with self._connect_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _connected(self) -> MilvusClient:
        """The client, connecting first if needed; every collection is loaded on connect
        because Milvus Lite reopens collections released."""
        with self._connect_lock:
            if self._client is None:
                client = MilvusClient(uri=self.uri, token=self._token, timeout=self._timeout)
                try:
                    loaded = self._load_all(client)
                except BaseException:
                    client.close()
                    raise
                log.info(
                    "connected to Milvus %sat %s, loaded %d collections",
                    "Lite " if self._lite else "",
                    self.uri,
                    loaded,
                )
                self._client = client
            return self._client

    def _load_all(self, client: MilvusClient) -> int:
        self._lite = self._flush_rows > 0 and _is_milvus_lite(client, self._timeout)
        names = client.list_collections(timeout=self._timeout)
        for name in names:
            try:
                client.load_collection(name, timeout=self._timeout)
                if self._lite:
                    # What Milvus Lite replayed from its log into memory is flushed.
                    client.flush(name, timeout=self._timeout)
            except MilvusException as exc:
                if _unreachable(exc):
                    raise
                # One broken collection must not take the others down; a search on it
                # retries the load (see _call).
                log.warning("cannot load or flush collection %r: %s", name, exc.message)
        return len(names)

    async def _call(
        self, what: str, fn: Callable[[MilvusClient], T], collection: str | None = None
    ) -> T:
        """Runs fn(client) in the pool. Rides out a short outage (Milvus restarting) and
        loads a collection Milvus reports released, then retries."""
        loop = asyncio.get_running_loop()
        give_up = time.monotonic() + min(self._timeout, RECONNECT_WINDOW_S)
        pause, load_first = 0.2, False
        while True:
            load = collection if load_first else None
            try:
                return await loop.run_in_executor(self._pool, self._attempt, fn, load)
            except MilvusException as exc:
                if exc.code == COLLECTION_NOT_LOADED and collection and not load_first:
                    # Milvus restarted under us; Milvus Lite reopens collections released.
                    log.info("collection %r was released; loading it", collection)
                    load_first = True
                    continue
                left = give_up - time.monotonic()
                if _unreachable(exc) and left > 0:
                    # The last try is at the window's end: Milvus Lite accepts connections
                    # a moment before it serves them again.
                    await asyncio.sleep(min(pause, left))
                    pause *= 2
                    continue
                raise self._translate(exc, what, collection) from None

    def _attempt(self, fn: Callable[[MilvusClient], T], load: str | None) -> T:
        client = self._connected()
        if load is not None:
            client.load_collection(load, timeout=self._timeout)
        return fn(client)

    def _translate(self, exc: MilvusException, what: str, collection: str | None) -> RagplaneError:
        code, message = exc.code, exc.message or type(exc).__name__
        if code == ErrorCode.COLLECTION_NOT_FOUND and collection is not None:
            self._models.pop(collection, None)
            self._schemas.pop(collection, None)
            return missing(collection)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(
                f"Milvus at {self.uri} did not finish {what} within {self._timeout:g} s"
            )
        if _unreachable(exc):
            error: RagplaneError = Unavailable(
                f"Milvus at {self.uri} is unreachable ({what}): {message}"
            )
        else:
            error = RagplaneError(f"Milvus at {self.uri} refused {what}: {message}")
        log.warning("%s", error)
        return error

    # Collections

    async def model_of(self, collection: str, max_age_s: float = 0.0) -> ModelRecord:
        """The model a collection is bound to; NOT_FOUND if it does not exist,
        FAILED_PRECONDITION if ragplane did not create it. With max_age_s, an answer
        read that recently is reused: searches pass the model cache age, so a busy
        retriever does not describe the collection before every search (a Milvus round
        trip each), while writes always read it fresh."""
        model = await self.recorded_model(collection, max_age_s)
        if model is None:
            raise FailedPrecondition(
                f"collection '{collection}' was not created by ragplane "
                "(it records no embedding model)"
            )
        return model

    async def recorded_model(self, collection: str, max_age_s: float = 0.0) -> ModelRecord | None:
        """The model a collection records, None if it records none (ragplane did not
        create it); NOT_FOUND if it does not exist."""
        cached = self._models.get(collection)
        if cached is not None and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
        return (await self.record(collection)).model

    async def record(self, collection: str) -> CollectionRecord:
        """The collection's properties, read fresh; NOT_FOUND if it does not exist."""
        described = await self._call(
            f"describe of {collection!r}",
            lambda c: c.describe_collection(collection, timeout=self._timeout),
            collection,
        )
        properties = described.get("properties", {})
        self._schemas[collection] = properties.get(schema.SCHEMA_PROPERTY, "1")
        raw = properties.get(schema.MODEL_PROPERTY)
        model = ModelRecord(**json.loads(raw)) if raw else None
        if model is not None:
            self._models[collection] = (time.monotonic(), model)
        return CollectionRecord(
            model,
            properties.get(schema.DESCRIPTION_PROPERTY, ""),
            int(properties.get(schema.CREATE_TIME_PROPERTY) or 0),
            int(properties.get(schema.UPDATE_TIME_PROPERTY) or 0),
        )

    async def touch(self, collection: str) -> None:
        """Records now as the collection's update time; a failure is logged, not raised:
        the write it follows has happened."""
        now = str(now_ms())
        try:
            await self._call(
                f"update time of {collection!r}",
                lambda c: c.alter_collection_properties(
                    collection,
                    properties={schema.UPDATE_TIME_PROPERTY: now},
                    timeout=self._timeout,
                ),
                collection,
            )
        except RagplaneError as exc:
            log.warning("%s; the collection's update time is stale", exc)

    async def collection_names(self) -> list[str]:
        """Every collection in the Milvus database, ragplane's or not."""
        names = await self._call(
            "list of collections", lambda c: c.list_collections(timeout=self._timeout)
        )
        return list(names)

    async def has_tags(self, collection: str) -> bool:
        """Whether the collection's schema has the tags array (schema 2 and later)."""
        return await self._schema(collection) >= schema.TAGS_SCHEMA

    async def has_metadata(self, collection: str) -> bool:
        """Whether the collection's schema has document metadata (schema 4 and later)."""
        return await self._schema(collection) >= schema.METADATA_SCHEMA

    async def _schema(self, collection: str) -> int:
        if collection not in self._schemas:
            await self.model_of(collection)
        return int(self._schemas[collection])

    async def create_collection(
        self, collection: str, model: ModelRecord, description: str = ""
    ) -> bool:
        """Creates the collection bound to `model`; False if it already exists."""

        def create(c: MilvusClient) -> bool:
            if c.has_collection(collection, timeout=self._timeout):
                return False
            created = str(now_ms())
            c.create_collection(
                collection,
                schema=schema.collection_schema(c, model.dimension),
                index_params=schema.index_params(c),
                # Strong: a chunk is searchable, and listed, as soon as Upsert returns.
                consistency_level="Strong",
                properties={
                    schema.MODEL_PROPERTY: json.dumps(asdict(model)),
                    schema.SCHEMA_PROPERTY: schema.SCHEMA_VERSION,
                    schema.DESCRIPTION_PROPERTY: description,
                    schema.CREATE_TIME_PROPERTY: created,
                    schema.UPDATE_TIME_PROPERTY: created,
                },
                timeout=self._timeout,
            )
            c.load_collection(collection, timeout=self._timeout)
            self._schemas[collection] = schema.SCHEMA_VERSION
            return True

        async with self._create_lock:
            return await self._call(f"create of {collection!r}", create, collection)

    async def drop_collection(self, collection: str) -> None:
        """Drops a collection and its chunks; NOT_FOUND if it does not exist."""

        def drop(c: MilvusClient) -> None:
            if not c.has_collection(collection, timeout=self._timeout):
                raise MilvusException(ErrorCode.COLLECTION_NOT_FOUND, "no such collection")
            c.drop_collection(collection, timeout=self._timeout)

        async with self._create_lock, self._write_lock(collection):
            self._cancel_idle_flush(collection)
            await self._call(f"drop of {collection!r}", drop, collection)
        self._unflushed.pop(collection, None)
        self._write_locks.pop(collection, None)
        self._schemas.pop(collection, None)
        self._models.pop(collection, None)

    async def count(self, collection: str) -> int:
        """How many chunks a collection holds."""
        rows = await self._call(
            f"count of {collection!r}",
            lambda c: c.query(
                collection, filter="", output_fields=["count(*)"], timeout=self._timeout
            ),
            collection,
        )
        return int(rows[0]["count(*)"])

    async def count_documents(self, collection: str) -> int:
        """How many documents have chunks in the collection (reads every chunk's doc_id)."""
        rows = await self._rows(collection, 'id != ""', ["doc_id"])
        return len({row["doc_id"] for row in rows})

    # Documents

    async def documents(
        self, collection: str, doc_ids: Sequence[str] = (), after: str = ""
    ) -> list[DocumentSummary]:
        """The named documents that have chunks (all documents if none are named), by
        doc_id; with `after`, only those whose doc_id sorts after it."""
        version = await self._schema(collection)
        expr = filter_expression(doc_ids) or 'id != ""'
        if after:
            expr = f"({expr}) and doc_id > {string_literal(after)}"
        fields = ["doc_id", "doc_hash", "title", "source"]
        if version >= schema.TAGS_SCHEMA:
            fields.append(schema.TAGS_FIELD)
        if version >= schema.METADATA_SCHEMA:
            fields += [schema.METADATA_FIELD, schema.INDEX_TIME_FIELD]
        rows = await self._rows(collection, expr, fields)
        found: dict[str, DocumentSummary] = {}
        # The chunk count each document's chunks say it has (None: not stamped).
        said: dict[str, int | None] = {}
        for row in rows:
            doc = found.get(row["doc_id"])
            index_time = int(row.get(schema.INDEX_TIME_FIELD) or 0)
            doc_hash, count = schema.unstamped(row["doc_hash"])
            if doc is None:
                said[row["doc_id"]] = count
                found[row["doc_id"]] = DocumentSummary(
                    row["doc_id"],
                    doc_hash,
                    1,
                    row["title"],
                    row["source"],
                    tuple(row.get(schema.TAGS_FIELD) or ()),
                    dict(row.get(schema.METADATA_FIELD) or {}),
                    index_time,
                )
                continue
            doc.chunk_count += 1
            doc.index_time_ms = max(doc.index_time_ms, index_time)
            if doc.doc_hash != doc_hash or said[doc.doc_id] != count:
                # Chunks from two versions: an interrupted write. An empty hash makes the
                # indexer treat the document as changed and rewrite it.
                doc.doc_hash = ""
        for doc in found.values():
            if said[doc.doc_id] not in (None, doc.chunk_count):
                # Fewer (or more) chunks than written: a write cut short. Rewritten too.
                doc.doc_hash = ""
        return sorted(found.values(), key=lambda d: d.doc_id)

    async def replace_documents(
        self, collection: str, documents: Sequence[DocumentChunks]
    ) -> list[tuple[int, int]]:
        """Makes each document's rows its only chunks: writes them all first, then deletes
        the documents' other chunks, so readers never see a document without chunks.
        One query finds the stale chunks of every document in the request (a filtered
        query scans Milvus Lite's unflushed rows, so one per document was the indexing
        bottleneck). Returns (chunks written, chunks deleted) per document."""
        version = await self._schema(collection)
        written_at = now_ms()
        rows = []
        for doc in documents:
            for chunk in doc.chunks:
                row = chunk.row(version, written_at)
                row["doc_hash"] = schema.stamped(chunk.chunk.doc_hash, len(doc.chunks))
                rows.append(row)
        async with self._write_lock(collection):
            for start in range(0, len(rows), WRITE_BATCH_ROWS):
                await self._upsert_batch(collection, rows[start : start + WRITE_BATCH_ROWS])
            stored = await self._rows(
                collection, filter_expression([d.doc_id for d in documents]), ["id", "doc_id"]
            )
            fresh = {row["id"] for row in rows}
            stale = [row for row in stored if row["id"] not in fresh]
            await self._delete_ids(collection, {row["id"] for row in stale})
            await self._maybe_flush(collection, len(rows) + len(stale))
        await self.touch(collection)
        deleted = {doc.doc_id: 0 for doc in documents}
        for row in stale:
            deleted[row["doc_id"]] += 1
        return [(len(doc.chunks), deleted[doc.doc_id]) for doc in documents]

    async def _maybe_flush(self, collection: str, changed: int) -> None:
        """Counts rows written under the collection's write lock; on Milvus Lite, flushes
        at flush_rows, and otherwise once the writes have been idle for flush_idle_s."""
        if not self._lite or not changed:
            return
        self._cancel_idle_flush(collection)
        self._unflushed[collection] = self._unflushed.get(collection, 0) + changed
        if self._unflushed[collection] >= self._flush_rows:
            await self._flush(collection)
        # What is left (everything, if that flush failed) goes once writes are idle.
        if self._unflushed.get(collection) and self._flush_idle_s > 0:
            self._idle_flushes[collection] = asyncio.create_task(
                self._flush_when_idle(collection), name=f"idle flush of {collection}"
            )

    def _cancel_idle_flush(self, collection: str) -> None:
        # Called under the write lock, so the task is asleep or waiting for that lock,
        # never inside a flush.
        task = self._idle_flushes.pop(collection, None)
        if task is not None:
            task.cancel()

    async def _flush_when_idle(self, collection: str) -> None:
        await asyncio.sleep(self._flush_idle_s)
        async with self._write_lock(collection):
            if self._idle_flushes.get(collection) is asyncio.current_task():
                del self._idle_flushes[collection]
            if self._unflushed.get(collection, 0) > 0:
                await self._flush(collection)

    async def _flush(self, collection: str) -> None:
        """Flushes; a failure is logged, not raised: the rows are already in Milvus's
        log, and the next flush takes them."""
        try:
            await self._call(
                f"flush of {collection!r}",
                lambda c: c.flush(collection, timeout=self._timeout),
                collection,
            )
        except RagplaneError as exc:
            log.warning("%s; searches scan the unflushed rows until the next flush", exc)
            return
        self._unflushed[collection] = 0

    async def delete_document(self, collection: str, doc_id: str) -> int:
        """Deletes every chunk of a document; returns how many there were."""
        async with self._write_lock(collection):
            ids = await self._chunk_ids(collection, doc_id)
            await self._delete_ids(collection, ids)
            await self._maybe_flush(collection, len(ids))
        if ids:
            await self.touch(collection)
        return len(ids)

    async def update_document(
        self, collection: str, doc_id: str, patch: DocumentPatch
    ) -> DocumentSummary | None:
        """Rewrites a document's chunks with the patch applied, each with the dense vector
        it has (read back, not recomputed); None if the document has no chunks."""
        version = await self._schema(collection)
        if patch.tags is not None and version < schema.TAGS_SCHEMA:
            raise FailedPrecondition(f"collection '{collection}' was created before tags existed")
        if patch.metadata is not None and version < schema.METADATA_SCHEMA:
            raise FailedPrecondition(
                f"collection '{collection}' was created before document metadata existed; "
                "re-index it into a new collection to keep metadata"
            )
        fields = schema.stored_fields(version, with_vectors=True)
        async with self._write_lock(collection):
            found = await self._rows(collection, filter_expression([doc_id]), fields)
            if not found:
                return None
            written_at = now_ms()
            rows = []
            for entity in found:
                chunk = StoredChunk.from_entity(entity, entity["id"])
                changed = replace(
                    chunk,
                    tags=chunk.tags if patch.tags is None else patch.tags,
                    metadata=chunk.metadata if patch.metadata is None else patch.metadata,
                    title=chunk.title if patch.title is None else patch.title,
                )
                indexed = schema.IndexedChunk(changed, list(entity[DENSE_FIELD]))
                row = indexed.row(version, written_at)
                row["doc_hash"] = entity["doc_hash"]  # with its chunk count, as written
                rows.append(row)
            for start in range(0, len(rows), WRITE_BATCH_ROWS):
                await self._upsert_batch(collection, rows[start : start + WRITE_BATCH_ROWS])
            await self._maybe_flush(collection, len(rows))
        await self.touch(collection)
        documents = await self.documents(collection, [doc_id])
        return documents[0] if documents else None

    async def _chunk_ids(self, collection: str, doc_id: str) -> set[str]:
        rows = await self._rows(collection, filter_expression([doc_id]), ["id"])
        return {row["id"] for row in rows}

    async def _delete_ids(self, collection: str, ids: set[str]) -> None:
        ordered = sorted(ids)
        for start in range(0, len(ordered), WRITE_BATCH_ROWS):
            await self._delete_batch(collection, ordered[start : start + WRITE_BATCH_ROWS])

    async def _upsert_batch(self, collection: str, rows: list[dict[str, Any]]) -> None:
        await self._call(
            f"upsert into {collection!r}",
            lambda c: c.upsert(collection, rows, timeout=self._timeout),
            collection,
        )

    async def _delete_batch(self, collection: str, ids: list[str]) -> None:
        expr = in_list("id", ids)
        await self._call(
            f"delete from {collection!r}",
            lambda c: c.delete(collection, filter=expr, timeout=self._timeout),
            collection,
        )

    async def _rows(
        self, collection: str, expr: str, fields: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Every row matching expr, paged with an iterator (plain queries stop at 16384)."""

        def page_through(c: MilvusClient) -> list[dict[str, Any]]:
            iterator = c.query_iterator(
                collection,
                batch_size=QUERY_PAGE_ROWS,
                filter=expr,
                output_fields=list(fields),
                timeout=self._timeout,
            )
            rows: list[dict[str, Any]] = []
            try:
                while batch := iterator.next():
                    rows.extend(batch)
            finally:
                iterator.close()
            return rows

        return await self._call(f"query of {collection!r}", page_through, collection)

    def _write_lock(self, collection: str) -> asyncio.Lock:
        # Writes to one collection are serialized so "which chunks are stale" is exact.
        return self._write_locks.setdefault(collection, asyncio.Lock())

    # Search

    async def search(
        self,
        collection: str,
        *,
        vector: list[float] | None,
        text: str | None,
        filter_expr: str,
        limit: int,
        with_vectors: bool = False,
        fusion: Fusion = Fusion(),
        with_tags: bool = True,
    ) -> list[Hit]:
        """Dense (COSINE) with only a vector, BM25 with only text, both fused (RRF or
        weighted) with both. `with_vectors` fetches each chunk's dense vector too."""
        fields = schema.output_fields(with_tags, with_vectors)
        if vector is not None and text is not None:
            return await self._hybrid(collection, vector, text, filter_expr, limit, fields, fusion)
        if vector is not None:
            return await self._single(
                collection, DENSE_FIELD, vector, "COSINE", filter_expr, limit, fields
            )
        if text is not None:
            hits = await self._single(
                collection, SPARSE_FIELD, text, "BM25", filter_expr, limit, fields
            )
            # BM25 is never negative; Milvus Lite reports it negated.
            return [replace(h, score=abs(h.score)) for h in hits]
        raise ValueError("search needs a vector, a text or both")

    async def _single(
        self,
        collection: str,
        field: str,
        query: Any,
        metric: str,
        expr: str,
        limit: int,
        fields: list[str],
    ) -> list[Hit]:
        results = await self._call(
            f"search of {collection!r}",
            lambda c: c.search(
                collection,
                data=[query],
                anns_field=field,
                search_params={"metric_type": metric},
                filter=expr,
                limit=limit,
                output_fields=fields,
                timeout=self._timeout,
            ),
            collection,
        )
        return _hits(results)

    async def _hybrid(
        self,
        collection: str,
        vector: list[float],
        text: str,
        expr: str,
        limit: int,
        fields: list[str],
        fusion: Fusion,
    ) -> list[Hit]:
        # Each side brings more candidates than asked for, so fusion has something to fuse.
        candidates = max(limit * fusion.depth_factor, fusion.min_depth)
        requests = [
            AnnSearchRequest(
                data=[vector],
                anns_field=DENSE_FIELD,
                param={"metric_type": "COSINE"},
                limit=candidates,
                expr=expr or None,
            ),
            AnnSearchRequest(
                data=[text],
                anns_field=SPARSE_FIELD,
                param={"metric_type": "BM25"},
                limit=candidates,
                expr=expr or None,
            ),
        ]
        results = await self._call(
            f"hybrid search of {collection!r}",
            lambda c: c.hybrid_search(
                collection,
                requests,
                ranker=fusion.ranker(),
                limit=limit,
                output_fields=fields,
                timeout=self._timeout,
            ),
            collection,
        )
        return _hits(results)


def route_pymilvus_logs() -> None:
    """pymilvus prints plain-text lines on its own handlers, with a traceback for every
    failed call (a missing collection included). Send its warnings through the service's
    JSON logs instead, minus the ones the store reports itself (see _translate)."""
    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("pymilvus").setLevel(logging.WARNING)
    for name in (
        "pymilvus.decorators",  # every failed call, expected ones too
        "pymilvus.client.connection_manager",  # each failed reconnect while Milvus is down
        "pymilvus.client.iterator.query_iterator",  # Milvus Lite has no session timestamps
    ):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _is_milvus_lite(client: MilvusClient, timeout: float) -> bool:
    try:
        return str(client.get_server_version(timeout=timeout)).startswith("milvus_lite")
    except MilvusException as exc:
        if _unreachable(exc):
            raise
        return False


def _unreachable(exc: MilvusException) -> bool:
    """Connection-level failures: Milvus down, restarting or unreachable."""
    return exc.code in (Status.CONNECT_FAILED, grpc.StatusCode.UNAVAILABLE)


def now_ms() -> int:
    return int(time.time() * 1000)


def missing(collection: str) -> NotFound:
    return NotFound(f"collection '{collection}' does not exist")


def _hits(results: Any) -> list[Hit]:
    if not results:
        return []
    return [
        Hit(
            StoredChunk.from_entity(hit["entity"], hit["id"]),
            float(hit["distance"]),
            hit["entity"].get(DENSE_FIELD),
        )
        for hit in results[0]
    ]
