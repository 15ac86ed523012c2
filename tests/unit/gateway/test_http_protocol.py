"""The HTTP API without a stack: OpenAI-shaped requests become the pipeline's queries,
its events become completions and server-sent events, its errors statuses and OpenAI's
error body; the committed OpenAPI document is the code's."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator

import grpc
import httpx
import openai
import pytest
from prometheus_client import REGISTRY

from ragplane import errors
from ragplane.gateway import api
from ragplane.gateway.auth import Authenticator
from ragplane.gateway.http import protocol as p
from ragplane.gateway.http import serving
from ragplane.gateway.http.app import HttpSettings, create_app
from ragplane.gateway.http.serving import HttpServing, InvalidParam
from ragplane.gateway.quotas import Quotas, QuotaSettings
from tools import openapi

DEFAULT = "default"


def hit(i: int, doc_id: str = "runbooks/deploy.md") -> api.Hit:
    chunk = api.StoredChunk(
        id=f"c{i}",
        doc_id=doc_id,
        title="Deploy runbook",
        source=f"samples/{doc_id}",
        section="Rolling back",
        position=i,
        text=f"passage {i}",
        tags=("ops",),
    )
    return api.Hit(chunk=chunk, collection="handbook", score=0.5 - i / 10, relevance=0.7)


def finished(**fields) -> api.Finished:
    fields.setdefault("finish_reason", "stop")
    fields.setdefault("usage", api.Usage(120, 7))
    fields.setdefault("timings", api.Timings(embed_ms=1, retrieve_ms=2, total_ms=9))
    return api.Finished(**fields)


ANSWER = [
    api.Citations([api.Citation(1, hit(0)), api.Citation(2, hit(1))]),
    api.Delta("Run `kctl rollback` "),
    api.Delta("[1]."),
    finished(),
]
ABSTAINED = [
    api.Citations([]),
    api.Delta("I don't know."),
    finished(
        usage=api.Usage(),
        abstain_reason=api.AbstainReason.UNKNOWN_NAMES,
        unknown_names=("Heroku",),
    ),
]


class FakePipeline:
    """Replays events (an exception among them is raised there) and records the queries."""

    def __init__(self, events=ANSWER, result: api.SearchResult | None = None) -> None:
        self.events = list(events)
        self.result = result
        self.queries: list[tuple[object, float | None]] = []

    async def ask(self, query: api.AskQuery, budget: float | None) -> AsyncIterator[api.AskEvent]:
        self.queries.append((query, budget))
        for event in self.events:
            if isinstance(event, BaseException):
                raise event
            yield event

    async def search(self, query: api.SearchQuery, budget: float | None) -> api.SearchResult:
        self.queries.append((query, budget))
        if isinstance(self.result, BaseException):
            raise self.result
        assert self.result is not None
        return self.result


def app_for(pipeline: FakePipeline, max_body_bytes: int = 4096, max_timeout: float = 300.0):
    service = HttpServing(pipeline, None, None, DEFAULT)  # type: ignore[arg-type]
    # Authentication disabled: these tests are about the protocol (tests/unit/gateway/
    # test_auth.py and tests/integration/security/ test the keys).
    return create_app(
        service,
        HttpSettings("127.0.0.1:0", max_body_bytes, max_timeout, 1.0),
        auth=Authenticator(None, Quotas(QuotaSettings())),
    )


def client_for(pipeline: FakePipeline, **settings) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app_for(pipeline, **settings))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


def chat_body(question: str = "How do I roll back?", **fields) -> dict:
    return {"model": "handbook", "messages": [{"role": "user", "content": question}], **fields}


# ---- requests to queries ----


def test_last_user_message_is_the_question_and_earlier_turns_the_history():
    request = p.ChatCompletionRequest(
        messages=[
            {"role": "user", "content": "How do I roll back a bad deploy?"},
            {"role": "assistant", "content": "Run kctl rollback [1]."},
            {"role": "user", "content": [{"type": "text", "text": "Who do I tell?"}]},
        ],
        max_tokens=50,
        max_completion_tokens=80,
        stop="\n\n",
        top_p=0.9,
    )
    query = serving.ask_query(request, "handbook")
    assert query.question == "Who do I tell?"
    assert query.history == (
        api.Turn("user", "How do I roll back a bad deploy?"),
        api.Turn("assistant", "Run kctl rollback [1]."),
    )
    assert query.max_tokens == 80, "max_completion_tokens wins over the deprecated max_tokens"
    assert query.stop == ("\n\n",)
    assert (query.temperature, query.top_p) == (0.0, 0.9), "greedy unless the caller says"
    assert query.retrieval == api.Retrieval(collection="handbook")


@pytest.mark.parametrize("role", ["system", "developer", "tool"])
def test_messages_other_than_user_and_assistant_are_refused(role):
    request = p.ChatCompletionRequest(
        messages=[{"role": role, "content": "Answer in French."}, {"role": "user", "content": "Hi"}]
    )
    with pytest.raises(InvalidParam, match="own system prompt") as refused:
        serving.ask_query(request, "handbook")
    assert refused.value.param == "messages[0].role"


def test_the_last_message_must_be_the_users():
    request = p.ChatCompletionRequest(
        messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    )
    with pytest.raises(InvalidParam, match="last message"):
        serving.ask_query(request, "handbook")


def test_retrieval_options_reach_the_query():
    options = p.RetrievalOptions(
        collections=["extra"],
        top_k=7,
        mode="keyword",
        filter={"doc_ids": ["a.md"], "source_prefix": "runbooks/", "tags": ["ops"]},
        fusion={"method": "weighted", "dense_weight": 0.7, "keyword_weight": 0.3},
        rerank={"enabled": True, "candidates": 40, "weight": 0.5},
        identifier_boost=False,
    )
    assert serving.retrieval(options, "handbook") == api.Retrieval(
        collection="handbook",
        extra_collections=("extra",),
        top_k=7,
        mode="keyword",
        filter=api.Filter(("a.md",), "runbooks/", ("ops",)),
        fusion=api.Fusion("weighted", 0, 0.7, 0.3),
        rerank=api.Rerank(True, 40, 0.5),
        identifier_boost=False,
    )
    assert serving.retrieval(p.RetrievalOptions(rerank=False), "h").rerank == api.Rerank(False)


@pytest.mark.parametrize(
    ("model", "collection"),
    [(None, DEFAULT), ("", DEFAULT), (p.DEFAULT_MODEL, DEFAULT), ("handbook", "handbook")],
)
def test_model_names_the_collection(model, collection):
    service = HttpServing(None, None, None, DEFAULT)  # type: ignore[arg-type]
    assert service._collection(model) == collection


def test_unknown_ragplane_options_are_refused_but_unknown_openai_fields_ignored():
    with pytest.raises(ValueError, match="topk"):
        p.ChatCompletionRequest(messages=[{"role": "user", "content": "q"}], ragplane={"topk": 3})
    request = p.ChatCompletionRequest(
        messages=[{"role": "user", "content": "q"}], seed=1, presence_penalty=0
    )
    assert request.messages[0].text() == "q"
    with pytest.raises(ValueError, match="n=1"):
        p.ChatCompletionRequest(messages=[{"role": "user", "content": "q"}], n=2)


def test_base64_embeddings_are_little_endian_float32():
    values = [0.25, -1.5, 3.0]
    encoded = serving._encoded(values, "base64")
    assert struct.unpack("<3f", base64.b64decode(encoded)) == tuple(values)


# ---- events to responses ----


async def test_a_completion_carries_the_answer_citations_and_usage():
    async with client_for(FakePipeline()) as client:
        reply = await client.post("/v1/chat/completions", json=chat_body())
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "chat.completion" and body["model"] == "handbook"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Run `kctl rollback` [1].",
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127}
    assert [c["index"] for c in body["citations"]] == [1, 2]
    assert body["citations"][0] == {
        "index": 1,
        "doc_id": "runbooks/deploy.md",
        "title": "Deploy runbook",
        "source": "samples/runbooks/deploy.md",
        "section": "Rolling back",
        "chunk_id": "c0",
        "collection": "handbook",
        "score": 0.5,
        "relevance": 0.7,
        "text": "passage 0",
    }
    assert body["abstained"] is False and body["abstain_reason"] is None


async def test_an_abstention_is_visible():
    async with client_for(FakePipeline(ABSTAINED)) as client:
        body = (await client.post("/v1/chat/completions", json=chat_body())).json()
    assert body["abstained"] is True
    assert body["abstain_reason"] == "unknown_names"
    assert body["unknown_names"] == ["Heroku"]
    assert body["choices"][0]["finish_reason"] == "stop" and body["citations"] == []


async def test_an_answer_cut_at_max_tokens_finishes_with_length():
    events = [*ANSWER[:-1], finished(finish_reason="length")]
    async with client_for(FakePipeline(events)) as client:
        body = (await client.post("/v1/chat/completions", json=chat_body(max_tokens=3))).json()
    assert body["choices"][0]["finish_reason"] == "length"


def sse_events(text: str) -> list[str]:
    """The data of each event, checking OpenAI's framing: `data: ...` then a blank line."""
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    for event in events:
        assert event.startswith("data: ") and "\n" not in event, event
    return [event.removeprefix("data: ") for event in events]


async def test_a_stream_is_openai_server_sent_events():
    async with client_for(FakePipeline()) as client:
        reply = await client.post(
            "/v1/chat/completions",
            json=chat_body(stream=True, stream_options={"include_usage": True}),
        )
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    *chunks, done = sse_events(reply.text)
    assert done == "[DONE]"
    chunks = [json.loads(c) for c in chunks]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    first, *deltas, last, usage = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["doc_id"] for c in first["citations"]] == ["runbooks/deploy.md"] * 2
    assert "".join(c["choices"][0]["delta"]["content"] for c in deltas) == (
        "Run `kctl rollback` [1]."
    )
    assert all("citations" not in c for c in [*deltas, last])
    assert last["choices"][0] == {
        "index": 0,
        "delta": {},
        "finish_reason": "stop",
        "logprobs": None,
    }
    assert last["abstained"] is False
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 127


async def test_without_include_usage_no_chunk_has_usage():
    async with client_for(FakePipeline()) as client:
        reply = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    chunks = [json.loads(c) for c in sse_events(reply.text)[:-1]]
    assert all("usage" not in c and c["choices"] for c in chunks)


async def test_the_openai_client_reads_the_stream():
    transport = httpx.ASGITransport(app=app_for(FakePipeline()))
    async with httpx.AsyncClient(transport=transport) as http:
        client = openai.AsyncOpenAI(
            base_url="http://gateway/v1", api_key="unused", http_client=http
        )
        stream = await client.chat.completions.create(
            model="handbook", messages=[{"role": "user", "content": "q"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[0].model_extra["citations"][0]["index"] == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Run `kctl rollback` [1]."
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_an_error_before_the_first_event_is_the_status_of_a_stream():
    pipeline = FakePipeline([errors.NotFound("collection 'nope' does not exist")])
    async with client_for(pipeline) as client:
        reply = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    assert reply.status_code == 404
    assert reply.json()["error"]["message"] == "collection 'nope' does not exist"


async def test_an_error_mid_stream_is_an_error_event_without_done():
    pipeline = FakePipeline([*ANSWER[:2], errors.Unavailable("the generator is down")])
    async with client_for(pipeline) as client:
        reply = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    *_, last = sse_events(reply.text)
    assert json.loads(last)["error"]["message"] == "the generator is down"
    assert "[DONE]" not in reply.text


async def test_search_returns_ranked_hits_with_text_and_metadata():
    result = api.SearchResult(
        [hit(0), hit(1, "handbook/on-call.md")], None, [], api.Timings(1, 2, 0.5, total_ms=4)
    )
    pipeline = FakePipeline(result=result)
    async with client_for(pipeline) as client:
        reply = await client.post(
            "/v1/search", json={"query": "roll back", "top_k": 2, "rerank": True}
        )
    body = reply.json()
    assert reply.status_code == 200, body
    assert [h["doc_id"] for h in body["hits"]] == ["runbooks/deploy.md", "handbook/on-call.md"]
    assert body["hits"][0]["text"] == "passage 0" and body["hits"][0]["tags"] == ["ops"]
    assert body["abstain_reason"] is None
    query, _ = pipeline.queries[0]
    assert query == api.SearchQuery(
        "roll back", api.Retrieval(collection=DEFAULT, top_k=2, rerank=api.Rerank(True))
    )


# ---- errors ----


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        (errors.InvalidArgument("question is empty"), 400, "invalid_request_error", None),
        (errors.NotFound("no collection"), 404, "invalid_request_error", None),
        (errors.FailedPrecondition("model mismatch"), 409, "invalid_request_error", None),
        (errors.ResourceExhausted("queue full"), 429, "rate_limit_error", None),
        (errors.Unavailable("down"), 503, "service_unavailable_error", None),
        (errors.DeadlineExceeded("late"), 504, "timeout_error", None),
        (rpc_error(grpc.StatusCode.NOT_FOUND, "no collection"), 404, None, "not_found"),
        (rpc_error(grpc.StatusCode.UNAVAILABLE, "down"), 503, None, "unavailable"),
        (rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "late"), 504, None, "deadline_exceeded"),
    ],
)
async def test_errors_map_to_statuses_and_openai_bodies(error, status, kind, code):
    async with client_for(FakePipeline([error])) as client:
        reply = await client.post("/v1/chat/completions", json=chat_body())
    assert reply.status_code == status
    body = reply.json()["error"]
    assert body["message"] == (error.details() if isinstance(error, grpc.RpcError) else str(error))
    assert set(body) == {"message", "type", "param", "code"}
    assert kind is None or body["type"] == kind
    assert code is None or body["code"] == code
    if status == 429:
        assert reply.headers["retry-after"] == "1"
    if status == 409:
        assert reply.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("error", "seconds", "milliseconds"),
    [
        (errors.ResourceExhausted("queue full", retry_after=2.5), "3", "2500"),
        (errors.Unavailable("restarting", retry_after=0.2), "1", "200"),
        (
            grpc.aio.AioRpcError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(("retry-after", "4")),
                "queue full",
            ),
            "4",
            "4000",
        ),
    ],
)
async def test_a_retry_hint_becomes_retry_after(error, seconds, milliseconds):
    async with client_for(FakePipeline([error])) as client:
        reply = await client.post("/v1/chat/completions", json=chat_body())
    assert reply.headers["retry-after"] == seconds
    assert reply.headers["retry-after-ms"] == milliseconds


async def test_an_unexpected_error_is_a_500_with_an_incident_not_a_traceback():
    async with client_for(FakePipeline([RuntimeError("secret internals")])) as client:
        reply = await client.post("/v1/chat/completions", json=chat_body())
    assert reply.status_code == 500
    message = reply.json()["error"]["message"]
    assert "incident" in message and "secret" not in message and "Traceback" not in reply.text


@pytest.mark.parametrize(
    ("content", "headers", "param", "words"),
    [
        (b'{"messages": [', {}, None, "not valid JSON"),
        (b"", {}, None, "missing"),
        (b'{"messages": "hi"}', {}, "messages", "valid list"),
        (b'{"messages": [{"role": "user", "content": 5}]}', {}, "messages.0.content", ""),
        (b'{"messages": [{"role": "user"}], "temperature": 3}', {}, "temperature", "2"),
        (
            b'{"messages": [{"role": "user"}]}',
            {"X-Request-Timeout": "soon"},
            "X-Request-Timeout",
            "",
        ),
    ],
)
async def test_bad_requests_are_400_in_openai_shape(content, headers, param, words):
    headers = {"content-type": "application/json", **headers}
    async with client_for(FakePipeline()) as client:
        reply = await client.post("/v1/chat/completions", content=content, headers=headers)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words in error["message"]


async def test_a_body_over_the_limit_is_413_whether_or_not_its_length_is_announced():
    big = json.dumps(chat_body("x" * 5000)).encode()

    async def chunked():
        yield big[:3000]
        yield big[3000:]

    async with client_for(FakePipeline(), max_body_bytes=4096) as client:
        announced = await client.post("/v1/chat/completions", content=big)
        streamed = await client.post("/v1/chat/completions", content=chunked())
    for reply in (announced, streamed):
        assert reply.status_code == 413
        assert reply.json()["error"]["code"] == "request_too_large"
    refused = REGISTRY.get_sample_value(
        "ragplane_http_requests_total",
        {"route": "/v1/chat/completions", "method": "POST", "status": "413"},
    )
    assert refused is not None and refused >= 2


async def test_unknown_routes_and_methods_answer_in_openai_shape():
    async with client_for(FakePipeline()) as client:
        missing = await client.get("/v1/nothing")
        wrong = await client.get("/v1/chat/completions")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "invalid_request_error"


async def test_the_callers_timeout_is_the_budget_cut_to_the_servers_maximum():
    pipeline = FakePipeline()
    async with client_for(pipeline, max_timeout=60.0) as client:
        for timeout in ("2.5", "600", None):
            headers = {"X-Request-Timeout": timeout} if timeout else {}
            await client.post("/v1/chat/completions", json=chat_body(), headers=headers)
    assert [budget for _, budget in pipeline.queries] == [2.5, 60.0, 60.0]


async def test_requests_are_counted_by_route_template():
    labels = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    before = REGISTRY.get_sample_value("ragplane_http_requests_total", labels) or 0
    async with client_for(FakePipeline()) as client:
        await client.post("/v1/chat/completions", json=chat_body())
        await client.get("/v1/no/such/route")
    assert REGISTRY.get_sample_value("ragplane_http_requests_total", labels) == before + 1
    assert REGISTRY.get_sample_value(
        "ragplane_http_requests_total", {"route": "unmatched", "method": "GET", "status": "404"}
    )
    assert REGISTRY.get_sample_value(
        "ragplane_http_request_duration_seconds_count", {"route": "/v1/chat/completions"}
    )


def test_the_committed_openapi_document_is_the_codes():
    assert openapi.OPENAPI.read_text() == openapi.document(), (
        "docs/openapi.json is stale: run `python -m tools.openapi`"
    )
