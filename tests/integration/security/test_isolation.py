"""Tenant isolation as a property over generated requests, on both doors: whatever tenant
alpha's admin key sends (collection, extra collections, filters, document ids, names the
names lookup checks, job ids; forged `beta__…` names too), it never gets one of tenant
beta's chunks, documents, collections or jobs, never changes them, and learns nothing of
their existence: every request that names one of beta's things gets the very answer it
gets with that name swapped for one that exists nowhere."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragplane.client import Document, GrpcClient, api_key_metadata
from ragplane.keys import Role
from ragplane.ops import stack
from ragplane.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.integration.security.conftest import Keyring, T

SECRET = "BETASECRET"
BETA_DOCS = ("beta-doc.md", "beta-private.md")
BETA_ONLY = "betaonly"
ALPHA_DOC = "alpha-doc.md"
# Names that would reach beta's data if names were not namespaced.
FORGED = ("beta__betaonly", "beta__shared", "beta", "_beta__shared", "local__default")
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class World:
    alpha: str
    beta: str
    beta_job: str  # "" when this stack runs no ingestion jobs


@pytest.fixture(scope="module")
async def world(running_stack: stack.StackLayout, keyring: Keyring) -> World:
    address = running_stack.address("gateway")
    alpha, beta = keyring.key("alpha", Role.ADMIN), keyring.key("beta", Role.ADMIN)
    async with GrpcClient(address, api_key=alpha) as client:
        text = "# Alpha handbook\n\nThe rollback lever is ALPHAMARK, pulled twice.\n"
        for collection in ("shared", "alphaonly"):
            await client.ingest([Document(ALPHA_DOC, text)], collection=collection, timeout=T)
    async with GrpcClient(address, api_key=beta) as client:
        text = f"# Beta handbook\n\nThe rollback lever is {SECRET}, the zebra protocol.\n"
        await client.ingest([Document(BETA_DOCS[0], text)], collection="shared", timeout=T)
        await client.ingest([Document(BETA_DOCS[1], text)], collection=BETA_ONLY, timeout=T)
    return World(alpha, beta, await _beta_job(address, beta))


async def _beta_job(address: str, beta: str) -> str:
    """A job of beta's, where the stack runs ingestion jobs."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            reply = await stub.CreateIngestJob(
                gateway_pb2.GatewayServiceCreateIngestJobRequest(
                    collection=BETA_ONLY,
                    documents=[gateway_pb2.Document(doc_id="job.md", content=b"# Job\n\nx\n")],
                ),
                metadata=api_key_metadata(beta),
                timeout=T,
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED)
            return ""
    return reply.job.id


# ---- what alpha sends ----

RANDOM = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
COLLECTIONS = st.one_of(st.sampled_from(("shared", "alphaonly", BETA_ONLY, *FORGED)), RANDOM)
# Collections a destructive call may name: never alpha's own, which the twin would change.
OTHERS = st.one_of(st.sampled_from((BETA_ONLY, *FORGED)), RANDOM)
DOC_IDS = st.one_of(st.sampled_from(BETA_DOCS), RANDOM.map(lambda s: f"{s}.md"))
QUERIES = st.sampled_from(
    (f"What is {SECRET}?", "the zebra protocol rollback lever", "rollback lever")
)


@st.composite
def requests(draw) -> tuple[str, dict[str, Any]]:
    op = draw(
        st.sampled_from(
            (
                "Search",
                "ListCollections",
                "DescribeCollection",
                "ListDocuments",
                "GetDocument",
                "DeleteDocument",
                "UpdateDocument",
                "DropCollection",
                "GetIngestJob",
                "ListIngestJobs",
                "CancelIngestJob",
            )
        )
    )
    if op == "Search":
        return op, {
            "query": draw(QUERIES),
            "collection": draw(COLLECTIONS),
            "extra_collections": draw(st.lists(COLLECTIONS, max_size=2, unique=True)),
            "doc_ids": draw(st.lists(DOC_IDS, max_size=2, unique=True)),
        }
    if op in ("DescribeCollection", "ListDocuments"):
        return op, {"collection": draw(COLLECTIONS)}
    if op == "DropCollection":
        return op, {"collection": draw(OTHERS)}
    if op in ("GetDocument", "DeleteDocument", "UpdateDocument"):
        return op, {"collection": draw(COLLECTIONS), "doc_id": draw(DOC_IDS)}
    if op in ("GetIngestJob", "CancelIngestJob"):
        return op, {"job_id": draw(st.sampled_from(("beta-job", "0" * 32)))}
    return op, {}


def betas_names(world: World) -> set[str]:
    """What is beta's (or forged to look like it): swapped out in the twin request."""
    job = [world.beta_job] if world.beta_job else []
    return {BETA_ONLY, *FORGED, *BETA_DOCS, "beta-job", *job}


def resolved(fields: dict[str, Any], world: World) -> dict[str, Any]:
    if fields.get("job_id") == "beta-job":
        return {**fields, "job_id": world.beta_job or "beta-job"}
    return fields


def twin(fields: dict[str, Any], world: World) -> tuple[dict[str, Any], dict[str, str]]:
    """The same request with each of beta's names swapped for a fresh one (and the swap)."""
    swap: dict[str, str] = {}

    def fresh(value: str) -> str:
        if value in betas_names(world):
            swap.setdefault(value, f"n{len(swap)}x{value.replace('-', '').replace('_', '')}"[:24])
            return swap[value]
        return value

    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "query":
            out[key] = value
        elif isinstance(value, list):
            out[key] = [fresh(v) for v in value]
        else:
            out[key] = fresh(value)
    if "job_id" in out and out["job_id"] in swap.values():
        # A job id that exists nowhere, in the ids' own form.
        out["job_id"] = re.sub(r"[0-9A-Za-z]", "f", fields["job_id"])
        swap[fields["job_id"]] = out["job_id"]
    return out, swap


# ---- gRPC ----


def grpc_message(op: str, f: dict[str, Any]):
    g = gateway_pb2
    if op == "Search":
        return g.GatewayServiceSearchRequest(
            query=f["query"],
            collection=f["collection"],
            extra_collections=f["extra_collections"],
            filter=common_pb2.MetadataFilter(doc_ids=f["doc_ids"]),
        )
    cls = getattr(g, f"GatewayService{op}Request")
    if op in ("DescribeCollection", "DropCollection"):
        return cls(name=f["collection"])
    if op == "UpdateDocument":
        request = cls(collection=f["collection"], doc_id=f["doc_id"])
        request.patch.title = "changed by alpha"
        return request
    return cls(**f)


def grpc_answer(channel: grpc.Channel, key: str, op: str, f: dict[str, Any]) -> tuple[str, Any]:
    path = f"/{gateway_pb2.DESCRIPTOR.services_by_name['GatewayService'].full_name}/{op}"
    reply_cls = getattr(gateway_pb2, f"GatewayService{op}Response")
    call = channel.unary_unary(
        path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=reply_cls.FromString,
    )
    try:
        return "OK", call(grpc_message(op, f), metadata=api_key_metadata(key), timeout=T)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()


def check_grpc_reply(op: str, reply: Any) -> None:
    """Nothing of beta's in what alpha got."""
    text = json_format.MessageToJson(reply)
    if op == "Search":
        for hit in reply.hits:
            assert SECRET not in hit.chunk.text and hit.chunk.doc_id not in BETA_DOCS, text
            assert hit.collection in ("shared", "alphaonly"), text
        return
    assert SECRET not in text and not any(d in text for d in BETA_DOCS), text
    if op == "ListCollections":
        assert {c.name for c in reply.collections}.isdisjoint({BETA_ONLY, *FORGED}), text


@pytest.fixture(scope="module")
def sync_gateway(running_stack: stack.StackLayout):
    with grpc.insecure_channel(running_stack.address("gateway")) as channel:
        yield channel


def test_alpha_never_reaches_betas_data_over_grpc(sync_gateway, world):
    @SETTINGS
    @given(requests())
    def prop(request: tuple[str, dict[str, Any]]) -> None:
        op, fields = request
        fields = resolved(fields, world)
        code, reply = grpc_answer(sync_gateway, world.alpha, op, fields)
        if code == "OK":
            check_grpc_reply(op, reply)
        other, swap = twin(fields, world)
        if swap:
            twin_code, twin_reply = grpc_answer(sync_gateway, world.alpha, op, other)
            assert code == twin_code, (op, fields, reply, twin_reply)
            if code != "OK":
                assert reply == unswap(twin_reply, swap), (op, fields)

    prop()


def unswap(message: str, swap: dict[str, str]) -> str:
    for original, fresh in swap.items():
        message = message.replace(fresh, original)
    return message


# ---- HTTP ----


def http_request(op: str, f: dict[str, Any]) -> tuple[str, str, dict | None]:
    c, d = f.get("collection", ""), f.get("doc_id", "")
    if op == "Search":
        body = {
            "query": f["query"],
            "collection": f["collection"],
            "collections": f["extra_collections"],
            "filter": {"doc_ids": f["doc_ids"]},
        }
        return "POST", "/v1/search", body
    return {
        "ListCollections": ("GET", "/v1/collections", None),
        "DescribeCollection": ("GET", f"/v1/collections/{c}", None),
        "ListDocuments": ("GET", f"/v1/collections/{c}/documents", None),
        "GetDocument": ("GET", f"/v1/collections/{c}/documents/{d}", None),
        "DeleteDocument": ("DELETE", f"/v1/collections/{c}/documents/{d}", None),
        "UpdateDocument": (
            "PATCH",
            f"/v1/collections/{c}/documents/{d}",
            {"title": "changed by alpha"},
        ),
        "DropCollection": ("DELETE", f"/v1/collections/{c}", None),
        "GetIngestJob": ("GET", f"/v1/jobs/{f.get('job_id')}", None),
        "ListIngestJobs": ("GET", "/v1/jobs", None),
        "CancelIngestJob": ("POST", f"/v1/jobs/{f.get('job_id')}/cancel", None),
    }[op]


def http_answer(client: httpx.Client, key: str, op: str, f: dict[str, Any]) -> httpx.Response:
    method, path, body = http_request(op, f)
    headers = {"authorization": f"Bearer {key}"}
    return client.request(method, path, json=body, headers=headers)


def check_http_reply(op: str, reply: httpx.Response) -> None:
    data = reply.json()
    if op == "Search":
        for hit in data["hits"]:
            assert SECRET not in hit["text"] and hit["doc_id"] not in BETA_DOCS, data
            assert hit["collection"] in ("shared", "alphaonly"), data
        return
    text = json.dumps(data)
    assert SECRET not in text and not any(d in text for d in BETA_DOCS), text
    if op == "ListCollections":
        names = {c["name"] for c in data["data"]}
        assert names.isdisjoint({BETA_ONLY, *FORGED}), text


def test_alpha_never_reaches_betas_data_over_http(running_stack, world):
    with httpx.Client(base_url=f"http://{running_stack.http_address()}", timeout=T) as client:

        @SETTINGS
        @given(requests())
        def prop(request: tuple[str, dict[str, Any]]) -> None:
            op, fields = request
            fields = resolved(fields, world)
            reply = http_answer(client, world.alpha, op, fields)
            assert reply.status_code < 500 or reply.status_code == 503, reply.text
            if reply.is_success:
                check_http_reply(op, reply)
            other, swap = twin(fields, world)
            if swap:
                twin_reply = http_answer(client, world.alpha, op, other)
                assert reply.status_code == twin_reply.status_code, (op, fields, reply.text)
                if not reply.is_success:
                    message = reply.json()["error"]["message"]
                    twin_message = twin_reply.json()["error"]["message"]
                    assert message == unswap(twin_message, swap), (op, fields)

        prop()

        # Models (chat's collections) and chat itself answer beta's names as unknown.
        models = client.get("/v1/models", headers={"authorization": f"Bearer {world.alpha}"})
        assert {m["id"] for m in models.json()["data"]}.isdisjoint({BETA_ONLY, *FORGED})
        for model in (BETA_ONLY, "beta__shared"):
            chat = client.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {world.alpha}"},
                json={"model": model, "messages": [{"role": "user", "content": SECRET}]},
            )
            assert chat.status_code == 404 and SECRET not in chat.text, chat.text


async def test_beta_keeps_all_it_had(running_stack, world):
    """After both properties: alpha's deletes, drops and updates touched none of beta's."""
    async with GrpcClient(running_stack.address("gateway"), api_key=world.beta) as beta:
        names = {c.name for c in await beta.collections(timeout=T)}
        assert {"shared", BETA_ONLY} <= names and "alphaonly" not in names
        for collection, doc_id in (("shared", BETA_DOCS[0]), (BETA_ONLY, BETA_DOCS[1])):
            documents, _ = await beta.documents(collection, timeout=T)
            mine = [d for d in documents if d.doc_id == doc_id]
            assert mine and mine[0].title != "changed by alpha", documents
            assert ALPHA_DOC not in {d.doc_id for d in documents}
        hits = await beta.search(
            f"What is {SECRET}?", collection="shared", mode="keyword", top_k=5, timeout=T
        )
        assert any(SECRET in h.text for h in hits)
