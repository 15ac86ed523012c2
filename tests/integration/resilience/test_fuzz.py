"""Fuzzing every public door of the gateway, and every RPC of every service with raw
bytes: hypothesis builds requests from the messages' descriptors and the HTTP routes'
models, with values no well-behaved client sends (NaN, huge numbers, unknown enum
values, odd text), and bytes that are no message at all. No call may answer INTERNAL or
UNKNOWN (or HTTP 500), no service may crash, and every one still serves afterwards.

Writes go to collections named fuzz*, dropped at the end. Counts per door are printed
(`-s`) and kept for docs/reliability.md."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from ragplane.client import api_key_metadata
from ragplane.gateway.http.router import router
from ragplane.keys import API_KEY_ENV
from ragplane.ops import processes, stack
from ragplane.v1 import (
    embedder_pb2,
    gateway_pb2,
    generator_pb2,
    retriever_pb2,
    retriever_pb2_grpc,
)
from tests.support import local

EXAMPLES = 25
RAW_EXAMPLES = 10
CALL_TIMEOUT_S = 10.0
FUZZ = "fuzz"
BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
COUNTS: Counter[str] = Counter()
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# The gateway's public RPCs, and the collection-naming fields pinned to fuzz* where the
# call writes.
GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
WRITES = {
    "Ingest",
    "DeleteDocument",
    "CreateCollection",
    "DropCollection",
    "UpdateDocument",
}
# Raw bytes that happen to parse could write outside fuzz*: these get hypothesis only.
WRITING_RPCS = {
    "CreateCollection",
    "DropCollection",
    "DeleteDocument",
    "UpdateDocument",
    "Upsert",
    "Ingest",
}
ALL_SERVICES = [
    gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"],
    embedder_pb2.DESCRIPTOR.services_by_name["EmbedderService"],
    retriever_pb2.DESCRIPTOR.services_by_name["RetrieverService"],
    generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"],
]
SERVICE_OF = {
    "GatewayService": "gateway",
    "EmbedderService": "embedder",
    "RetrieverService": "retriever",
    "GeneratorService": "generator",
}

ODD_TEXT = st.sampled_from(
    ["", " ", "\x00", "💥" * 50, "a" * 5000, "../../etc/passwd", "default", "$(rm -rf /)"]
)
TEXT = st.text(max_size=60) | ODD_TEXT
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return TEXT
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=300)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 40)  # unknown values included: proto3 enums are open
    if t == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    low, high = INT_RANGES[t]
    return st.integers(low, high) | st.sampled_from([0, 1, low, high])


def fields_of(descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for the message's constructor, any subset of its fields."""
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3 or field.message_type.GetOptions().map_entry:
                continue
            value = fields_of(field.message_type, depth + 1)
        else:
            value = scalar(field)
        repeated = field.is_repeated
        optional[field.name] = st.lists(value, max_size=3) if repeated else value
    return st.fixed_dictionaries({}, optional=optional)


def build(cls: type[Message], kwargs: dict[str, Any], write: bool) -> Message:
    message = cls(**kwargs)
    if write:  # writes stay in the fuzz collection
        for name in ("collection", "name"):
            if name in message.DESCRIPTOR.fields_by_name:
                setattr(message, name, FUZZ)
    return message


def grpc_call(channel: grpc.Channel, path: str, streaming: bool, payload: bytes) -> None:
    """One call with serialized `payload`, with the suite's API key (the services behind
    the gateway ignore it); fails the test on a bad status."""
    metadata = api_key_metadata(os.environ[API_KEY_ENV])
    try:
        if streaming:
            for _ in channel.unary_stream(path)(payload, timeout=CALL_TIMEOUT_S, metadata=metadata):
                pass
        else:
            channel.unary_unary(path)(payload, timeout=CALL_TIMEOUT_S, metadata=metadata)
    except grpc.RpcError as exc:
        assert exc.code() not in BAD_CODES, (path, payload[:200], exc.code(), exc.details())


def _stub_paths(service) -> list[tuple[str, bool, Any]]:
    return [(f"/{service.full_name}/{m.name}", m.server_streaming, m) for m in service.methods]


@pytest.fixture(scope="module")
def sync_channels(running_stack: stack.StackLayout):
    opened = {name: grpc.insecure_channel(running_stack.address(name)) for name in stack.SERVICES}
    yield opened
    for channel in opened.values():
        channel.close()


@pytest.mark.parametrize("method", [m.name for m in GATEWAY.methods])
def test_gateway_rpcs_survive_hypothesis_requests(sync_channels, resilience_collection, method):
    rpc = GATEWAY.methods_by_name[method]
    cls = getattr(gateway_pb2, rpc.input_type.name)
    path = f"/{GATEWAY.full_name}/{method}"
    write = method in WRITES

    @FUZZ_SETTINGS
    @given(fields_of(rpc.input_type))
    def fuzz(kwargs: dict[str, Any]) -> None:
        message = build(cls, kwargs, write)
        COUNTS[f"gRPC {method}"] += 1
        grpc_call(sync_channels["gateway"], path, rpc.server_streaming, message.SerializeToString())

    fuzz()


@pytest.mark.parametrize(
    "service", [s.name for s in ALL_SERVICES], ids=[SERVICE_OF[s.name] for s in ALL_SERVICES]
)
def test_every_rpc_survives_raw_bytes(sync_channels, service):
    descriptor = next(s for s in ALL_SERVICES if s.name == service)
    channel = sync_channels[SERVICE_OF[service]]
    for path, streaming, method in _stub_paths(descriptor):
        if method.name not in WRITING_RPCS:
            fuzz_raw(channel, path, streaming, f"raw bytes {service}")


def fuzz_raw(channel: grpc.Channel, path: str, streaming: bool, label: str) -> None:
    @settings(FUZZ_SETTINGS, max_examples=RAW_EXAMPLES)
    @given(st.binary(max_size=200))
    def fuzz(payload: bytes) -> None:
        COUNTS[label] += 1
        grpc_call(channel, path, streaming, payload)

    fuzz()


# ---- HTTP ---------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "x"])},
        optional={"content": TEXT | JSON},
    ),
    max_size=3,
)
HTTP_ROUTES = [
    (method, route.path, route)
    for route in router.routes
    for method in sorted(getattr(route, "methods", ()))
]


def body_of(route) -> st.SearchStrategy[Any]:
    params = route.dependant.body_params
    model = params[0].field_info.annotation if len(params) == 1 else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return JSON
    optional = {name: JSON for name in model.model_fields}
    if "messages" in optional:
        optional["messages"] = MESSAGES | JSON
    return st.fixed_dictionaries({}, optional=optional) | JSON


def path_of(template: str, names: list[str]) -> str:
    path = template.replace("{doc_id:path}", "{doc_id}")
    for i, name in enumerate(("name", "doc_id")):
        path = path.replace("{" + name + "}", f"{FUZZ}{names[i]}" if name == "name" else names[i])
    return path


def check_http(reply: httpx.Response, what: str) -> None:
    assert reply.status_code < 500 or reply.status_code in (501, 503, 504), (
        what,
        reply.status_code,
        reply.text[:500],
    )
    if reply.status_code >= 400:
        assert "error" in reply.json(), (what, reply.text[:500])


@pytest.mark.parametrize(("method", "template"), [(m, p) for m, p, _ in HTTP_ROUTES])
def test_http_routes_survive_hypothesis_requests(
    running_stack, resilience_collection, method, template
):
    route = next(r for m, p, r in HTTP_ROUTES if (m, p) == (method, template))
    base = f"http://{running_stack.http_address()}"
    uploads = bool(route.dependant.body_params) and route.dependant.body_params[0].name == "files"
    names = st.lists(st.text(alphabet="abc_-.%/ 1", max_size=12), min_size=2, max_size=2)

    @FUZZ_SETTINGS
    @given(names, body_of(route), st.binary(max_size=300), st.booleans())
    def fuzz(names: list[str], body: Any, raw: bytes, send_raw: bool) -> None:
        url = base + path_of(template, names)
        headers = {
            "x-request-timeout": str(CALL_TIMEOUT_S),
            "authorization": f"Bearer {os.environ[API_KEY_ENV]}",
        }
        COUNTS[f"HTTP {method} {template}"] += 1
        with httpx.Client(timeout=CALL_TIMEOUT_S + 20) as client:
            if uploads:
                files = {"files": ("fuzz.md", raw)}
                reply = client.request(method, url, files=files, headers=headers)
            elif send_raw or method in ("GET", "DELETE"):
                reply = client.request(method, url, content=raw, headers=headers)
            else:
                text = json.dumps(body, allow_nan=True)  # NaN: not JSON, must be a 400
                headers["content-type"] = "application/json"
                reply = client.request(method, url, content=text, headers=headers)
            check_http(reply, f"{method} {url}")

    fuzz()


async def test_every_service_still_serves_and_none_restarted(running_stack, channels):
    for name in stack.SERVICES:
        assert await processes.serving(running_stack.address(name)), name
    assert not any(stack.restarts(running_stack).values()), stack.restarts(running_stack)
    # What the fuzz wrote goes.
    retriever = retriever_pb2_grpc.RetrieverServiceStub(channels["retriever"])
    listed = await retriever.ListCollections(retriever_pb2.ListCollectionsRequest(), timeout=30)
    for c in listed.collections:
        if c.name.startswith(local(FUZZ)):
            await retriever.DropCollection(
                retriever_pb2.DropCollectionRequest(name=c.name), timeout=30
            )
    print("\nfuzz counts:", json.dumps(dict(sorted(COUNTS.items())), indent=1))
