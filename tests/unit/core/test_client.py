"""ragplane.client gives the same typed events and one GatewayError on both transports:
gRPC against an in-process GatewayService, HTTP against hand-written server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from ragplane.client import (
    Citation,
    Citations,
    Delta,
    Document,
    Finished,
    GatewayError,
    GrpcClient,
    HttpClient,
    IngestStatus,
    Usage,
    decode_sse,
    error_from_http,
    event_from_proto,
)
from ragplane.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.support import free_port

CITATION = gateway_pb2.Citation(
    index=1,
    doc_id="runbooks/deploy.md",
    title="Deploying ledger-api",
    source="samples/handbook/runbooks/deploy.md",
    section="Rollback",
    chunk_id="c1",
    score=0.03,
    collection="handbook",
    text="Run `deployctl rollback ledger-api`.",
    relevance=0.71,
)
FINISHED_CUT = gateway_pb2.AskFinished(
    finish_reason=common_pb2.FINISH_REASON_LENGTH,
    usage=common_pb2.Usage(prompt_tokens=300, completion_tokens=4),
    timings=gateway_pb2.StageTimings(embed_ms=5, retrieve_ms=9, total_ms=120),
)


# ---- gRPC ----


def test_proto_events_decode_to_the_clients_types():
    citations = event_from_proto(
        gateway_pb2.AskResponse(citations=gateway_pb2.Citations(citations=[CITATION]))
    )
    assert citations == Citations(
        [
            Citation(
                index=1,
                doc_id="runbooks/deploy.md",
                title="Deploying ledger-api",
                source="samples/handbook/runbooks/deploy.md",
                section="Rollback",
                chunk_id="c1",
                score=pytest.approx(0.03),
                collection="handbook",
                text="Run `deployctl rollback ledger-api`.",
                relevance=pytest.approx(0.71),
            )
        ]
    )
    assert event_from_proto(gateway_pb2.AskResponse(delta="Run ")) == Delta("Run ")
    cut = event_from_proto(gateway_pb2.AskResponse(finished=FINISHED_CUT))
    assert isinstance(cut, Finished)
    assert cut.finish_reason == "length" and cut.cut and not cut.abstained
    assert cut.usage == Usage(300, 4)
    assert (cut.timings.embed_ms, cut.timings.total_ms) == (5, 120)


def test_an_abstention_says_why():
    finished = event_from_proto(
        gateway_pb2.AskResponse(
            finished=gateway_pb2.AskFinished(
                finish_reason=common_pb2.FINISH_REASON_STOP,
                abstained=True,
                abstain_reason=gateway_pb2.ABSTAIN_REASON_UNKNOWN_NAMES,
                unknown_names=["Heroku"],
            )
        )
    )
    assert finished == Finished(
        "stop", abstained=True, abstain_reason="unknown_names", unknown_names=("Heroku",)
    )


class FakeGateway(gateway_pb2_grpc.GatewayServiceServicer):
    """Answers every question with one citation and a cut answer; refuses the
    collection "missing" and reports the retriever down for "broken"."""

    async def _refuse(self, collection: str, context) -> None:
        if collection == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "collection 'missing' does not exist")
        if collection == "broken":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "retriever: connection refused")

    async def Ask(self, request, context):  # noqa: N802 - gRPC method name
        await self._refuse(request.collection, context)
        assert request.filter.tags == ["ops"] and request.mode == common_pb2.SEARCH_MODE_KEYWORD
        yield gateway_pb2.AskResponse(citations=gateway_pb2.Citations(citations=[CITATION]))
        for word in ("Run ", "deployctl ", "rollback"):
            yield gateway_pb2.AskResponse(delta=word)
        yield gateway_pb2.AskResponse(finished=FINISHED_CUT)

    async def Search(self, request, context):  # noqa: N802
        chunk = common_pb2.Chunk(id="c1", doc_id="runbooks/deploy.md", text="Run it.", position=2)
        return gateway_pb2.GatewayServiceSearchResponse(
            hits=[
                common_pb2.ScoredChunk(
                    chunk=chunk, score=0.5, relevance=0.7, collection="handbook"
                ),
                common_pb2.ScoredChunk(chunk=chunk, score=0.4, rerank_score=2.5, reranked=True),
            ]
        )

    async def Ingest(self, request, context):  # noqa: N802
        return gateway_pb2.IngestResponse(
            results=[
                gateway_pb2.DocumentResult(
                    doc_id=d.doc_id, status=gateway_pb2.INGEST_STATUS_WRITTEN, chunks_written=3
                )
                for d in request.documents
            ]
        )

    async def DeleteDocument(self, request, context):  # noqa: N802
        await self._refuse(request.collection, context)
        return gateway_pb2.GatewayServiceDeleteDocumentResponse(
            chunks_deleted=3 if request.doc_id == "runbooks/deploy.md" else 0
        )


@pytest.fixture(scope="module")
async def fake_gateway() -> AsyncIterator[str]:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(FakeGateway(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def test_grpc_ask_streams_citations_deltas_then_finished(fake_gateway):
    async with GrpcClient(fake_gateway) as gateway:
        events = [e async for e in gateway.ask("rollback?", mode="keyword", tags=["ops"])]
        answer, citations, finished = await gateway.ask_text(
            "rollback?", mode="keyword", tags=["ops"]
        )
    assert [type(e) for e in events] == [Citations, Delta, Delta, Delta, Finished]
    assert answer == "Run deployctl rollback"
    assert [c.doc_id for c in citations] == ["runbooks/deploy.md"]
    assert finished.cut


async def test_grpc_search_ingest_and_delete(fake_gateway):
    async with GrpcClient(fake_gateway) as gateway:
        hits = await gateway.search("rollback")
        results = await gateway.ingest([Document("a.md", "# A\n\ntext")])
        assert await gateway.delete("runbooks/deploy.md") == 3
        assert await gateway.delete("nothing.md") == 0
    assert (hits[0].chunk_id, hits[0].position, hits[0].relevance) == ("c1", 2, pytest.approx(0.7))
    assert hits[0].rerank_score is None and hits[1].rerank_score == 2.5
    assert results[0].status is IngestStatus.WRITTEN and results[0].chunks_written == 3
    # Numbered as the proto enum: code comparing with gateway_pb2 values keeps working.
    assert results[0].status == gateway_pb2.INGEST_STATUS_WRITTEN


async def test_grpc_errors_carry_the_status_name(fake_gateway):
    async with GrpcClient(fake_gateway) as gateway:
        with pytest.raises(GatewayError) as missing:
            await gateway.delete("a.md", "missing")
        with pytest.raises(GatewayError) as broken:
            await gateway.ask_text("rollback?", collection="broken")
    assert missing.value.code == "NOT_FOUND" and "missing" in missing.value.message
    # The gateway answered: a dependency is down, not the gateway.
    assert broken.value.code == "UNAVAILABLE" and not broken.value.unreachable


async def test_no_grpc_gateway_at_the_address_is_unreachable():
    async with GrpcClient(f"127.0.0.1:{free_port()}") as gateway:
        with pytest.raises(GatewayError) as refused:
            await gateway.ask_text("anyone there?", timeout=10)
    assert refused.value.code == "UNAVAILABLE" and refused.value.unreachable


# ---- HTTP ----

# What the gateway's HTTP API streams: the first chunk carries the citations, the last
# choice the finish reason and ragplane's fields, then the usage chunk (include_usage).
SSE = "\r\n".join(
    [
        ": ping",
        "data: "
        + json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "model": "handbook",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
                "citations": [
                    {
                        "index": 1,
                        "doc_id": "runbooks/deploy.md",
                        "title": "Deploying ledger-api",
                        "source": "samples/handbook/runbooks/deploy.md",
                        "section": "Rollback",
                        "chunk_id": "c1",
                        "collection": "handbook",
                        "score": 0.03,
                        "relevance": 0.71,
                        "text": "Run `deployctl rollback ledger-api`.",
                    }
                ],
            }
        ),
        "",
        'data: {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "Run "}}]}',
        "",
        'data:{"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "it [1]."}}]}',
        "",
        "data: "
        + json.dumps(
            {
                "id": "chatcmpl-1",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                "abstained": False,
                "abstain_reason": None,
                "unknown_names": [],
                "timings": {"embed_ms": 5.0, "retrieve_ms": 9.0, "rerank_ms": 0.0, "total_ms": 80},
            }
        ),
        "",
        'data: {"id": "chatcmpl-1", "choices": [], '
        '"usage": {"prompt_tokens": 300, "completion_tokens": 4, "total_tokens": 304}}',
        "",
        "data: [DONE]",
        "",
        "",
    ]
)


def test_sse_events_decode_to_the_same_types():
    events = decode_sse(SSE)
    assert [type(e) for e in events] == [Citations, Delta, Delta, Finished]
    assert isinstance(events[0], Citations)
    assert events[0].citations[0].section == "Rollback"
    assert events[0].citations[0].relevance == pytest.approx(0.71)
    assert [e.text for e in events if isinstance(e, Delta)] == ["Run ", "it [1]."]
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.cut and finished.usage == Usage(300, 4) and not finished.abstained
    assert finished.timings.total_ms == 80


def test_an_http_abstention_says_why():
    last = {
        "choices": [{"index": 0, "delta": {"content": "I don't know."}, "finish_reason": "stop"}],
        "abstained": True,
        "abstain_reason": "low_relevance",
    }
    *_, finished = decode_sse(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n")
    assert finished == Finished("stop", abstained=True, abstain_reason="low_relevance")


def test_a_stream_cut_off_before_its_finish_is_an_error():
    with pytest.raises(GatewayError, match="ended before"):
        decode_sse('data: {"choices": [{"index": 0, "delta": {"content": "Run"}}]}\n\n')


def test_an_error_event_in_the_stream_is_raised():
    error = {"error": {"message": "generator: deadline exceeded", "type": "timeout", "code": None}}
    with pytest.raises(GatewayError) as raised:
        decode_sse(f"data: {json.dumps(error)}\n\n")
    assert raised.value.code == "INTERNAL" and "generator" in raised.value.message


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (
            404,
            {"error": {"message": "no collection 'x'", "type": "x", "code": "model_not_found"}},
            "NOT_FOUND",
        ),
        (
            400,
            {"error": {"message": "top_k: too big", "type": "invalid_request_error"}},
            "INVALID_ARGUMENT",
        ),
        (
            429,
            {"error": {"message": "queue full", "type": "x", "code": "resource_exhausted"}},
            "RESOURCE_EXHAUSTED",
        ),
        (503, {"error": {"message": "embedder down", "type": "x", "code": None}}, "UNAVAILABLE"),
        (
            409,
            {"error": {"message": "model mismatch", "type": "x", "code": "FAILED_PRECONDITION"}},
            "FAILED_PRECONDITION",
        ),
        (502, "<html>Bad Gateway</html>", "UNAVAILABLE"),
    ],
)
def test_http_errors_map_to_status_names(status, body, code):
    text = body if isinstance(body, str) else json.dumps(body)
    error = error_from_http(status, text)
    assert (error.code, error.http_status) == (code, status)
    assert error.message == (body if isinstance(body, str) else body["error"]["message"])
    assert not error.unreachable


def mock_gateway(seen: list[dict]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"path": request.url.path, **body})
        if request.url.path == "/v1/search":
            hit = {"chunk_id": "c1", "doc_id": "a.md", "text": "t", "score": 0.5, "relevance": 0.6}
            return httpx.Response(200, json={"hits": [hit], "abstain_reason": None})
        if body["model"] == "missing":
            error = {"message": "collection 'missing' does not exist", "type": "not_found_error"}
            return httpx.Response(404, json={"error": {**error, "code": "model_not_found"}})
        return httpx.Response(
            200, text=SSE, headers={"content-type": "text/event-stream; charset=utf-8"}
        )

    return httpx.MockTransport(handle)


async def test_http_ask_sends_an_openai_request_and_decodes_the_stream():
    seen: list[dict] = []
    async with HttpClient("http://gateway:50060/", transport=mock_gateway(seen)) as gateway:
        answer, citations, finished = await gateway.ask_text(
            "rollback?", collection="handbook", top_k=3, mode="hybrid", tags=["ops"], max_tokens=4
        )
        await gateway.ask_text("rollback?")
        hits = await gateway.search("rollback", collection="handbook", top_k=2)
    assert (answer, citations[0].index, finished.cut) == ("Run it [1].", 1, True)
    chat, default, search = seen
    assert chat["path"] == "/v1/chat/completions" and chat["stream"] is True
    assert chat["model"] == "handbook" and chat["max_completion_tokens"] == 4
    assert chat["messages"] == [{"role": "user", "content": "rollback?"}]
    assert chat["ragplane"] == {"top_k": 3, "mode": "hybrid", "filter": {"tags": ["ops"]}}
    # Unset settings are left out, so the server's defaults apply.
    assert default["model"] == "ragplane" and "ragplane" not in default
    assert "max_completion_tokens" not in default
    assert search == {
        "path": "/v1/search",
        "query": "rollback",
        "collection": "handbook",
        "top_k": 2,
    }
    assert (hits[0].chunk_id, hits[0].relevance, hits[0].rerank_score) == ("c1", 0.6, None)


async def test_http_errors_are_gateway_errors():
    async with HttpClient("http://gateway:50060", transport=mock_gateway([])) as gateway:
        with pytest.raises(GatewayError) as missing:
            await gateway.ask_text("rollback?", collection="missing")
        with pytest.raises(GatewayError) as ingest:
            await gateway.ingest([Document("a.md", "text")])
    assert (missing.value.code, missing.value.http_status) == ("NOT_FOUND", 404)
    assert "missing" in missing.value.message
    assert ingest.value.code == "UNIMPLEMENTED"


async def test_no_http_gateway_at_the_address_is_unreachable():
    async with HttpClient(f"http://127.0.0.1:{free_port()}") as gateway:
        with pytest.raises(GatewayError) as refused:
            await gateway.ask_text("anyone there?", timeout=10)
    assert refused.value.code == "UNAVAILABLE" and refused.value.unreachable


async def test_api_key_interceptors_put_the_key_on_unary_and_streaming_calls():
    """grpc.aio files an interceptor under the first call kind it implements: the key
    must still reach Watch (unary-stream) as well as Check (unary-unary)."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from ragplane.channels import open_channel
    from ragplane.client import api_key_interceptors

    seen: list[str] = []

    class Recording(health.aio.HealthServicer):
        async def Check(self, request, context):  # noqa: N802 - gRPC method name
            seen.append(dict(context.invocation_metadata()).get("authorization", ""))
            return await super().Check(request, context)

        async def Watch(self, request, context):  # noqa: N802
            seen.append(dict(context.invocation_metadata()).get("authorization", ""))
            yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(Recording(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        channel = open_channel(f"127.0.0.1:{port}", interceptors=api_key_interceptors("rpk_a_b"))
        async with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            async for _ in stub.Watch(health_pb2.HealthCheckRequest(), timeout=5):
                break
    finally:
        await server.stop(0)
    assert seen == ["Bearer rpk_a_b", "Bearer rpk_a_b"]
