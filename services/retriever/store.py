"""All Milvus access: collections bound to an embedding model, chunks, and search.

pymilvus' client is synchronous, so every call runs in a small thread pool and the
event loop never blocks. Milvus Lite and a Milvus server or cluster are the same code
with another URI.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pymilvus import (
    AnnSearchRequest,
    DataType,
    Function,
    FunctionType,
    MilvusClient,
    MilvusException,
    RRFRanker,
)

from ragplane.errors import NotFound, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

MODEL_PROPERTY = "ragplane.embedding_model"
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
# Keeps identifiers such as max_wal_senders, 23505 and --no-owner findable by keyword.
TEXT_ANALYZER = {"tokenizer": "standard", "filter": ["lowercase"]}
MAX_TEXT_CHARS = 65535
QUERY_PAGE = 1000


@dataclass(frozen=True)
class ModelRecord:
    id: str
    revision: str
    weights_sha256: str
    dimension: int

    def label(self) -> str:
        return f"{self.id}@{self.revision or '?'} ({self.dimension}-d)"


@dataclass(frozen=True)
class Hit:
    fields: dict[str, Any]
    score: float


def escape(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return json.dumps(value)


class MilvusStore:
    def __init__(self, uri: str, token: str, timeout_s: float, threads: int = 4) -> None:
        self._uri = uri
        self._token = token
        self._timeout = timeout_s
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="milvus")
        self._client: MilvusClient | None = None
        self._models: dict[str, ModelRecord] = {}

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            return fn(self._connected(), *args, **kwargs)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except MilvusException as exc:
            raise _unavailable(self._uri, exc) from None

    def _connected(self) -> MilvusClient:
        if self._client is None:
            try:
                self._client = MilvusClient(uri=self._uri, token=self._token, timeout=self._timeout)
            except MilvusException as exc:
                raise _unavailable(self._uri, exc) from None
        return self._client

    async def start(self) -> None:
        """Connects and loads every collection (Milvus Lite reopens them unloaded)."""
        names = await self._run(lambda c: c.list_collections(timeout=self._timeout))
        for name in names:
            await self._run(lambda c, n=name: c.load_collection(n, timeout=self._timeout))
        log.info("connected to Milvus at %s, loaded %d collections", self._uri, len(names))

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._pool.shutdown(wait=False)

    async def model_of(self, collection: str) -> ModelRecord:
        """The model a collection was created with; NOT_FOUND if there is no such collection."""
        if collection in self._models:
            return self._models[collection]

        def describe(c: MilvusClient) -> dict[str, Any] | None:
            if not c.has_collection(collection, timeout=self._timeout):
                return None
            return c.describe_collection(collection, timeout=self._timeout)

        described = await self._run(describe)
        if described is None:
            raise NotFound(f"collection {collection!r} does not exist")
        raw = described.get("properties", {}).get(MODEL_PROPERTY)
        if raw is None:
            raise NotFound(f"collection {collection!r} was not created by ragplane")
        record = ModelRecord(**json.loads(raw))
        self._models[collection] = record
        return record

    async def create(self, collection: str, model: ModelRecord) -> None:
        def create(c: MilvusClient) -> None:
            schema = c.create_schema(auto_id=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
            for name in ("doc_id", "title", "source", "section"):
                schema.add_field(name, DataType.VARCHAR, max_length=2048)
            for name in ("doc_hash", "content_hash"):
                schema.add_field(name, DataType.VARCHAR, max_length=64)
            schema.add_field("position", DataType.INT64)
            schema.add_field(
                "text",
                DataType.VARCHAR,
                max_length=MAX_TEXT_CHARS,
                enable_analyzer=True,
                analyzer_params=TEXT_ANALYZER,
            )
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_field("dense", DataType.FLOAT_VECTOR, dim=model.dimension)
            schema.add_function(
                Function(
                    name="text_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["text"],
                    output_field_names=["sparse"],
                )
            )
            index = c.prepare_index_params()
            index.add_index("dense", index_type="AUTOINDEX", metric_type="COSINE")
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
            c.create_collection(
                collection,
                schema=schema,
                index_params=index,
                properties={MODEL_PROPERTY: json.dumps(model.__dict__)},
                timeout=self._timeout,
            )
            c.load_collection(collection, timeout=self._timeout)

        await self._run(create)
        self._models[collection] = model

    async def exists(self, collection: str) -> bool:
        return await self._run(lambda c: c.has_collection(collection, timeout=self._timeout))

    async def drop(self, collection: str) -> None:
        await self.model_of(collection)
        await self._run(lambda c: c.drop_collection(collection, timeout=self._timeout))
        self._models.pop(collection, None)

    async def count(self, collection: str) -> int:
        rows = await self._run(
            lambda c: c.query(
                collection, filter="", output_fields=["count(*)"], timeout=self._timeout
            )
        )
        return int(rows[0]["count(*)"])

    async def chunk_ids(self, collection: str, doc_id: str) -> set[str]:
        rows = await self.query(collection, f"doc_id == {escape(doc_id)}", ["id"])
        return {r["id"] for r in rows}

    async def query(
        self, collection: str, expr: str, fields: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Every row matching expr, paged so it works past Milvus' per-query limit."""

        def page_through(c: MilvusClient) -> list[dict[str, Any]]:
            iterator = c.query_iterator(
                collection,
                batch_size=QUERY_PAGE,
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

        return await self._run(page_through)

    async def upsert(self, collection: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self._run(lambda c: c.upsert(collection, rows, timeout=self._timeout))

    async def delete(self, collection: str, expr: str) -> None:
        await self._run(lambda c: c.delete(collection, filter=expr, timeout=self._timeout))

    async def search(
        self,
        collection: str,
        *,
        vector: list[float] | None,
        text: str | None,
        expr: str,
        limit: int,
    ) -> list[Hit]:
        """Dense if only a vector, BM25 if only text, both fused with RRF if both."""
        requests = []
        if vector is not None:
            requests.append(
                AnnSearchRequest(
                    data=[vector],
                    anns_field="dense",
                    param={"metric_type": "COSINE"},
                    limit=limit,
                    expr=expr,
                )
            )
        if text is not None:
            requests.append(
                AnnSearchRequest(
                    data=[text],
                    anns_field="sparse",
                    param={"metric_type": "BM25"},
                    limit=limit,
                    expr=expr,
                )
            )

        def search(c: MilvusClient) -> list[Any]:
            if len(requests) == 1:
                r = requests[0]
                return c.search(
                    collection,
                    data=r.data,
                    anns_field=r.anns_field,
                    search_params=r.param,
                    filter=expr,
                    limit=limit,
                    output_fields=CHUNK_FIELDS,
                    timeout=self._timeout,
                )[0]
            return c.hybrid_search(
                collection,
                requests,
                ranker=RRFRanker(60),
                limit=limit,
                output_fields=CHUNK_FIELDS,
                timeout=self._timeout,
            )[0]

        hits = await self._run(search)
        return [Hit(fields=dict(h["entity"], id=h["id"]), score=float(h["distance"])) for h in hits]


def _unavailable(uri: str, exc: MilvusException) -> Exception:
    return Unavailable(f"Milvus at {uri} failed: {exc.message if hasattr(exc, 'message') else exc}")
