"""The gateway's HTTP API on the real stack, driven by the real openai client and httpx
as an OpenAI-compatible application would: answers with citations, streams, errors,
models, embeddings, search equal to the gRPC Search, and one trace from HTTP inward.

The client is openai.AsyncOpenAI: the session's event loop also serves the OTLP sink
the services export their spans to, and a blocking client would stall it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import secrets
import struct

import httpx
import openai
import pytest

from ragplane.client import GrpcClient, IngestStatus
from ragplane.keys import API_KEY_ENV
from ragplane.ops import cli, stack
from ragplane.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    retriever_pb2,
    retriever_pb2_grpc,
)
from tests.support import ROOT, local

CORPUS = ROOT / "samples" / "handbook"
HANDBOOK = "handbook"
T = 120  # seconds, every call
QUESTION = "How do I roll back a bad deploy of ledger-api?"
DEPLOY = "runbooks/deploy.md"


@pytest.fixture(scope="module")
def gateway(channels) -> gateway_pb2_grpc.GatewayServiceStub:
    return gateway_pb2_grpc.GatewayServiceStub(channels["gateway"])


@pytest.fixture(scope="module")
async def handbook(channels) -> None:
    """The sample corpus in its own collection, indexed over gRPC (unchanged when the
    stack tests indexed it already)."""
    client = GrpcClient(channels["gateway"])
    results = await cli.ingest(client, [CORPUS], collection=HANDBOOK, out=io.StringIO())
    assert results and all(r.status != IngestStatus.FAILED for r in results)


@pytest.fixture(scope="module")
def base_url(running_stack: stack.StackLayout) -> str:
    return f"http://{running_stack.http_address()}"


@pytest.fixture(scope="module")
async def client(base_url) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key=os.environ[API_KEY_ENV], max_retries=0, timeout=T
    )


@pytest.fixture(scope="module")
async def http(base_url) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {os.environ[API_KEY_ENV]}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=T, headers=headers) as client:
        yield client


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def extra(completion) -> dict:
    return completion.model_extra or {}


async def test_chat_completion_answers_with_citations(client, handbook):
    completion = await client.chat.completions.create(model=HANDBOOK, messages=[user(QUESTION)])
    choice = completion.choices[0]
    assert completion.object == "chat.completion" and completion.model == HANDBOOK
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    citations = extra(completion)["citations"]
    assert DEPLOY in {c["doc_id"] for c in citations}
    # Numbered as the prompt's passages, which the answer's [n] markers refer to.
    assert [c["index"] for c in citations] == list(range(1, len(citations) + 1))
    assert all(c["text"] and c["title"] and c["chunk_id"] for c in citations)
    assert extra(completion)["abstained"] is False
    assert extra(completion)["abstain_reason"] is None
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_streamed_chat_sends_citations_first_then_text_then_usage(client, handbook):
    stream = await client.chat.completions.create(
        model=HANDBOOK,
        messages=[user(QUESTION)],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    first, *middle, last, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    assert DEPLOY in {c["doc_id"] for c in extra(first)["citations"]}
    assert all("citations" not in extra(c) for c in [*middle, last, usage])
    text = "".join(c.choices[0].delta.content or "" for c in middle)
    assert text.strip()
    assert last.choices[0].finish_reason in ("stop", "length")
    assert extra(last)["abstained"] is False
    assert usage.choices == [] and usage.usage.completion_tokens > 0


async def test_raw_response_carries_status_and_headers(client, handbook):
    raw = await client.chat.completions.with_raw_response.create(
        model=HANDBOOK,
        messages=[user(QUESTION)],
        max_completion_tokens=5,
        extra_headers={"X-Request-Timeout": "60"},
    )
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/json"
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "length", "cut at max_completion_tokens"
    assert completion.usage.completion_tokens == 5


async def test_retrieval_options_travel_in_the_ragplane_object(client, handbook):
    completion = await client.chat.completions.create(
        model=HANDBOOK,
        messages=[user(QUESTION)],
        max_tokens=8,
        extra_body={"ragplane": {"top_k": 2, "mode": "dense", "filter": {"doc_ids": [DEPLOY]}}},
    )
    assert [c["doc_id"] for c in extra(completion)["citations"]] == [DEPLOY, DEPLOY]


async def test_a_question_the_corpus_cannot_answer_abstains_visibly(client, handbook):
    completion = await client.chat.completions.create(
        model=HANDBOOK, messages=[user("How do I roll back a bad deploy of ledger-api on Heroku?")]
    )
    assert extra(completion)["abstained"] is True
    assert extra(completion)["abstain_reason"] == "unknown_names"
    assert "Heroku" in extra(completion)["unknown_names"]
    assert completion.choices[0].finish_reason == "stop"
    assert "don't know" in completion.choices[0].message.content
    assert extra(completion)["citations"] == []


async def test_a_follow_up_retrieves_from_the_conversation(client, http, handbook):
    follow_up = "And who do I tell afterwards?"
    first = await client.chat.completions.create(model=HANDBOOK, messages=[user(QUESTION)])
    completion = await client.chat.completions.create(
        model=HANDBOOK,
        messages=[
            user(QUESTION),
            {"role": "assistant", "content": first.choices[0].message.content},
            user(follow_up),
        ],
    )
    assert DEPLOY in {c["doc_id"] for c in extra(completion)["citations"]}
    assert QUESTION in extra(completion)["retrieval_query"]
    # Alone, the follow-up does not find the runbook first: the history made the difference.
    alone = await http.post("/v1/search", json={"collection": HANDBOOK, "query": follow_up})
    assert alone.json()["hits"][0]["doc_id"] != DEPLOY


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"messages": [user("   ")]}, openai.BadRequestError),
        (
            {"messages": [{"role": "system", "content": "Be brief."}, user(QUESTION)]},
            openai.BadRequestError,
        ),
        ({"messages": [user(QUESTION)], "model": "no_such_collection"}, openai.NotFoundError),
        ({"messages": [user(QUESTION)], "model": "foreign_http"}, openai.ConflictError),
    ],
)
async def test_errors_raise_the_openai_clients_exceptions(client, retriever_stub, fields, error):
    with pytest.raises(error) as raised:
        await client.chat.completions.create(**{"model": HANDBOOK, **fields})
    assert raised.value.body["message"] and raised.value.body["type"]


@pytest.fixture(scope="module")
async def retriever_stub(channels) -> retriever_pb2_grpc.RetrieverServiceStub:
    """Also makes `foreign_http`, a collection of another embedding model than the
    embedder's: asking it is a model mismatch (409)."""
    stub = retriever_pb2_grpc.RetrieverServiceStub(channels["retriever"])
    other = common_pb2.ModelIdentity(id="other/embedder", revision="r2", dimension=384)
    await stub.CreateCollection(
        retriever_pb2.CreateCollectionRequest(
            name=local("foreign_http"), model=other, exist_ok=True
        ),
        timeout=T,
    )
    return stub


BIG = json.dumps({"model": HANDBOOK, "messages": [user("x" * (2 * 1024 * 1024))]})


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"messages": [user("")]}, 400, None),
        ({"messages": [user("why? " * 1000)]}, 400, None),
        ({"messages": [user(QUESTION)], "ragplane": {"top_k": 51}}, 400, None),
        ({"messages": [user(QUESTION)], "model": "1-bad name"}, 400, None),
        ({"messages": [user(QUESTION)], "model": "no_such_collection"}, 404, None),
        ('{"model": "handbook", "messages": [', 400, None),
        ({"messages": [{"role": "user", "content": 42}]}, 400, "messages.0.content"),
        ({"messages": [user(QUESTION)], "max_tokens": "many"}, 400, "max_tokens"),
        ({"messages": [user(QUESTION)], "stream": True, "ragplane": {"top_k": 51}}, 400, None),
        (BIG, 413, None),
    ],
    ids=[
        "empty question",
        "over-long question",
        "top_k over 50",
        "bad collection name",
        "unknown collection",
        "malformed JSON",
        "content not text",
        "max_tokens not a number",
        "streamed, top_k over 50",
        "body over 1 MiB",
    ],
)
async def test_bad_input_gets_its_status_and_an_openai_error_body(
    http, handbook, body, status, param
):
    if isinstance(body, dict):
        body = json.dumps({"model": HANDBOOK, **body})
    reply = await http.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in reply.text
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_the_callers_deadline_reaches_the_services(http, handbook):
    reply = await http.post(
        "/v1/chat/completions",
        json={"model": HANDBOOK, "messages": [user(QUESTION)]},
        headers={"X-Request-Timeout": "0.001"},
    )
    assert reply.status_code == 504, reply.text
    assert reply.json()["error"]["code"] == "deadline_exceeded"


async def test_sse_framing_line_by_line(http, handbook):
    body = {"model": HANDBOOK, "messages": [user(QUESTION)], "stream": True, "max_tokens": 16}
    async with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        raw = (await reply.aread()).decode()
    lines = raw.split("\n")
    assert lines[-2:] == ["", ""], "the stream ends with a blank line"
    events, blank = lines[0:-2:2], lines[1:-2:2]
    assert set(blank) == {""}, "each event is one data line and a blank line"
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_models_lists_the_collections(client, channels, handbook):
    info = await embedder_pb2_grpc.EmbedderServiceStub(channels["embedder"]).Info(
        embedder_pb2.EmbedderServiceInfoRequest(), timeout=T
    )
    models = {m.id: m for m in (await client.models.list()).data}
    card = models[HANDBOOK]
    assert card.object == "model" and card.owned_by == "ragplane"
    assert card.model_extra["embedding_model"] == info.model.id
    assert card.model_extra["chunk_count"] > 0


async def test_embeddings_are_the_embedders(client, http, channels):
    texts = ["kctl rollback", "deploy freeze on Fridays"]
    embedder = embedder_pb2_grpc.EmbedderServiceStub(channels["embedder"])
    direct = await embedder.Embed(embedder_pb2.EmbedRequest(texts=texts), timeout=T)
    counted = await embedder.Tokenize(embedder_pb2.TokenizeRequest(texts=texts), timeout=T)
    # The openai client asks for base64 and decodes it.
    reply = await client.embeddings.create(model=direct.model.id, input=texts)
    assert [len(d.embedding) for d in reply.data] == [384, 384]
    for got, want in zip(reply.data, direct.embeddings, strict=True):
        assert got.embedding == pytest.approx(list(want.values), abs=1e-6)
    assert reply.model == direct.model.id
    assert reply.usage.prompt_tokens == sum(counted.token_counts)
    # One text alone is a batch of its own: padding moves the last bits (~1e-7).
    floats = (await http.post("/v1/embeddings", json={"input": texts[0]})).json()
    want = pytest.approx(list(direct.embeddings[0].values), abs=1e-6)
    assert floats["data"][0]["embedding"] == want
    b64 = (
        await http.post("/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"})
    ).json()["data"][0]["embedding"]
    assert list(struct.unpack("<384f", base64.b64decode(b64))) == want
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="text-embedding-3-small", input=texts)


async def test_search_returns_the_same_hits_as_the_grpc_search(gateway, http, handbook):
    for query, fields in ((QUESTION, {}), ("deploy freeze", {"mode": "keyword", "top_k": 8})):
        reply = await http.post(
            "/v1/search", json={"collection": HANDBOOK, "query": query, **fields}
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        grpc_fields = {"top_k": fields.get("top_k", 0)}
        if "mode" in fields:
            grpc_fields["mode"] = common_pb2.SEARCH_MODE_KEYWORD
        found = await gateway.Search(
            gateway_pb2.GatewayServiceSearchRequest(
                collection=HANDBOOK, query=query, **grpc_fields
            ),
            timeout=T,
        )
        assert [(h["doc_id"], h["chunk_id"]) for h in body["hits"]] == [
            (h.chunk.doc_id, h.chunk.id) for h in found.hits
        ]
        assert body["hits"][0]["text"] == found.hits[0].chunk.text
        assert body["abstain_reason"] is None and found.abstain_reason == 0
    over = await http.post("/v1/search", json={"query": QUESTION, "top_k": 101})
    assert over.status_code == 400 and "top_k" in over.json()["error"]["message"]


HTTP_SPAN = "POST /v1/chat/completions"


async def test_one_trace_spans_http_the_gateway_and_the_services(http, span_sink, handbook):
    sink, _ = span_sink
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    reply = await http.post(
        "/v1/chat/completions",
        json={"model": HANDBOOK, "messages": [user(QUESTION)], "max_tokens": 8},
        headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )
    assert reply.status_code == 200
    wanted = {f"ragplane-{name}" for name in stack.SERVICES}

    def server_spans(spans) -> list:
        return [s for name, s in spans if name == "ragplane-gateway" and s.name == HTTP_SPAN]

    for _ in range(100):
        spans = [(s, span) for s, span in sink.spans if span.trace_id.hex() == trace_id]
        # The HTTP span ends last, after the response: it may come in a later export.
        if {s for s, _ in spans} >= wanted and server_spans(spans):
            break
        await asyncio.sleep(0.1)
    assert {s for s, _ in spans} >= wanted, sorted({s for s, _ in spans})
    server = server_spans(spans)
    assert server and server[0].parent_span_id.hex() == parent, "the caller's span is the parent"
    gateway_names = {span.name for s, span in spans if s == "ragplane-gateway"}
    assert {"embed", "retrieve", "generate"} <= gateway_names


async def test_http_requests_are_counted_by_route(http, running_stack, handbook):
    await http.get("/v1/models")
    port = running_stack.metrics_ports["gateway"]
    metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert re.search(
        r'ragplane_http_requests_total\{method="GET",route="/v1/models",status="200"\} [1-9]',
        metrics,
    ), metrics[-2000:]
    assert 'ragplane_http_request_duration_seconds_count{route="/v1/chat/completions"}' in metrics
