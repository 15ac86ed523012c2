"""Tenant isolation by construction: every call the gateway makes to the retriever goes
through NamespacedRetriever, which puts the calling tenant's prefix on every collection
name a request carries and takes it off every name that comes back.

A tenant's collection `name` is stored as `<tenant>__<name>` (Milvus' "collection per
tenant" model, docs/security.md says why). Tenant ids have no underscore, so the first
"__" of a stored name ends its tenant: no public name of one tenant can spell a stored
name of another. Nothing above this module handles stored names, so no request field
(collection, extra collections, the names lookup, doc ids, which are looked up inside a
collection) can reach another tenant's data, whatever the code above forgets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from ragplane.errors import InvalidArgument
from ragplane.gateway.api import valid_collection
from ragplane.gateway.auth import Principal, acting_as, current_principal
from ragplane.gateway.quotas import Quotas
from ragplane.v1 import retriever_pb2, retriever_pb2_grpc

SEPARATOR = "__"
# Milvus' limit on a collection name.
MAX_STORED_NAME = 255

__all__ = [
    "NamespacedRetriever",
    "current_tenant",
    "public_name",
    "stored_name",
    "tenant_scope",
]


def current_tenant() -> str:
    """The tenant of the call being served (its API key's); raises outside a call."""
    return current_principal().tenant


def stored_name(tenant: str, name: str) -> str:
    """The name the retriever stores tenant `tenant`'s collection `name` under."""
    if not name:
        raise InvalidArgument("the collection name is empty")
    # Every field naming a collection passes here (extra collections too): the public
    # rule holds for all of them, whatever the retriever would accept once prefixed.
    valid_collection(name, "")
    stored = f"{tenant}{SEPARATOR}{name}"
    if len(stored) > MAX_STORED_NAME:
        limit = MAX_STORED_NAME - len(tenant) - len(SEPARATOR)
        raise InvalidArgument(f"collection {name!r} is too long: at most {limit} characters")
    return stored


def public_name(tenant: str, stored: str) -> str | None:
    """The tenant's name for a stored collection; None if it is not the tenant's."""
    prefix = f"{tenant}{SEPARATOR}"
    return stored[len(prefix) :] if stored.startswith(prefix) else None


@contextmanager
def tenant_scope(tenant: str) -> Iterator[None]:
    """Work done outside a request on a tenant's behalf (a background job): its retriever
    calls are namespaced to `tenant` as the request's were."""
    with acting_as(Principal(key_id="", tenant=tenant, role=None)):
        yield


class NamespacedRetriever:
    """The retriever's stub as the gateway sees it: the same methods, each confined to the
    calling tenant's collections. Without a tenant (no call being served) it refuses.
    With `quotas`, every write of chunks is held to the tenant's storage limit."""

    def __init__(
        self, stub: retriever_pb2_grpc.RetrieverServiceStub, quotas: Quotas | None = None
    ) -> None:
        self._stub = stub
        self.quotas = quotas

    async def _call(
        self,
        method: Callable[..., Any],
        request: Any,
        names: dict[str, str],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            return await method(request, **kwargs)
        except grpc.aio.AioRpcError as exc:
            raise _unprefixed(exc, names) from None

    def _map(self, tenant: str, names: dict[str, str], name: str) -> str:
        stored = stored_name(tenant, name)
        names[stored] = name
        return stored

    async def CreateCollection(self, request, **kwargs):  # noqa: N802 - the stub's names
        tenant, names = current_tenant(), dict[str, str]()
        sent = retriever_pb2.CreateCollectionRequest()
        sent.CopyFrom(request)
        sent.name = self._map(tenant, names, request.name)
        reply = await self._call(self._stub.CreateCollection, sent, names, kwargs)
        reply.collection.name = request.name
        return reply

    async def DescribeCollection(self, request, **kwargs):  # noqa: N802
        tenant, names = current_tenant(), dict[str, str]()
        sent = retriever_pb2.DescribeCollectionRequest(name=self._map(tenant, names, request.name))
        reply = await self._call(self._stub.DescribeCollection, sent, names, kwargs)
        reply.collection.name = request.name
        return reply

    async def DropCollection(self, request, **kwargs):  # noqa: N802
        tenant, names = current_tenant(), dict[str, str]()
        sent = retriever_pb2.DropCollectionRequest(name=self._map(tenant, names, request.name))
        return await self._call(self._stub.DropCollection, sent, names, kwargs)

    async def ListCollections(self, request, **kwargs):  # noqa: N802
        """Only the tenant's collections, under their public names."""
        tenant = current_tenant()
        sent = retriever_pb2.ListCollectionsRequest()
        sent.CopyFrom(request)
        # The retriever counts only these; public_name still checks each one it sends.
        sent.name_prefix = f"{tenant}{SEPARATOR}"
        reply = await self._call(self._stub.ListCollections, sent, {}, kwargs)
        mine = retriever_pb2.ListCollectionsResponse()
        for c in reply.collections:
            name = public_name(tenant, c.name)
            if name is not None:
                kept = mine.collections.add()
                kept.CopyFrom(c)
                kept.name = name
        return mine

    async def ListDocuments(self, request, **kwargs):  # noqa: N802
        return await self._in_collection(self._stub.ListDocuments, request, kwargs)

    async def UpdateDocument(self, request, **kwargs):  # noqa: N802
        return await self._in_collection(self._stub.UpdateDocument, request, kwargs)

    async def Upsert(self, request, **kwargs):  # noqa: N802
        """Refused (RESOURCE_EXHAUSTED) when the chunks would take the tenant past its
        storage limit; counted as added even where they replace a document's own."""
        if self.quotas is not None and self.quotas.settings.max_tenant_chunks:
            listed = await self.ListCollections(
                retriever_pb2.ListCollectionsRequest(skip_document_count=True),
                timeout=kwargs.get("timeout"),
            )
            stored = sum(c.chunk_count for c in listed.collections)
            adding = sum(len(d.chunks) for d in request.documents)
            self.quotas.check_storage(current_tenant(), stored, adding)
        return await self._in_collection(self._stub.Upsert, request, kwargs)

    async def DeleteDocument(self, request, **kwargs):  # noqa: N802
        return await self._in_collection(self._stub.DeleteDocument, request, kwargs)

    async def Search(self, request, **kwargs):  # noqa: N802
        """Every collection searched (and so every names lookup) is the tenant's."""
        tenant, names = current_tenant(), dict[str, str]()
        sent = type(request)()
        sent.CopyFrom(request)
        sent.collection = self._map(tenant, names, request.collection)
        del sent.extra_collections[:]
        sent.extra_collections.extend(
            self._map(tenant, names, name) for name in request.extra_collections
        )
        reply = await self._call(self._stub.Search, sent, names, kwargs)
        for hit in reply.hits:
            hit.collection = public_name(tenant, hit.collection) or ""
        return reply

    async def _in_collection(self, method: Callable[..., Any], request: Any, kwargs: dict) -> Any:
        """A call on documents of one collection (`collection` field)."""
        tenant, names = current_tenant(), dict[str, str]()
        sent = type(request)()
        sent.CopyFrom(request)
        sent.collection = self._map(tenant, names, request.collection)
        return await self._call(method, sent, names, kwargs)


def _unprefixed(exc: grpc.aio.AioRpcError, names: dict[str, str]) -> grpc.aio.AioRpcError:
    """The retriever's error with the tenant's public names in its message."""
    details = exc.details() or ""
    for stored in sorted(names, key=len, reverse=True):
        details = details.replace(stored, names[stored])
    return grpc.aio.AioRpcError(
        exc.code(), exc.initial_metadata(), exc.trailing_metadata(), details, None
    )
