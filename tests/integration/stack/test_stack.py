"""The whole stack, real parts end to end, driven over gRPC like a product backend."""

from __future__ import annotations

import asyncio
import io
import json

import grpc
import pytest

from evals import evaluation
from ragplane.client import GrpcClient
from ragplane.names import normal
from ragplane.ops import cli, stack
from ragplane.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    generator_pb2,
    generator_pb2_grpc,
    retriever_pb2,
    retriever_pb2_grpc,
)
from tests.support import ROOT, local

CORPUS = ROOT / "samples" / "handbook"
QUESTIONS = [
    json.loads(line)
    for line in (ROOT / "samples" / "handbook-questions.jsonl").read_text().splitlines()
    if line.strip()
]
T = 120  # deadline of every call in these tests, seconds
DEMO_QUESTION_ID = "q01"
HANDBOOK = "handbook"  # "How do I roll back a bad deploy of ledger-api?"


@pytest.fixture(scope="module")
def gateway(channels) -> gateway_pb2_grpc.GatewayServiceStub:
    return gateway_pb2_grpc.GatewayServiceStub(channels["gateway"])


@pytest.fixture(scope="module")
def retriever(channels) -> retriever_pb2_grpc.RetrieverServiceStub:
    return retriever_pb2_grpc.RetrieverServiceStub(channels["retriever"])


@pytest.fixture(scope="module")
async def handbook(channels) -> list:
    """The sample corpus indexed once into its own collection."""
    client = GrpcClient(channels["gateway"])
    return await cli.ingest(client, [CORPUS], collection=HANDBOOK, out=io.StringIO())


def markdown(doc_id: str, text: str) -> gateway_pb2.Document:
    return gateway_pb2.Document(doc_id=doc_id, source=f"tests/{doc_id}", content=text.encode())


async def ask(gateway, question: str, **fields) -> tuple[str, list, gateway_pb2.AskFinished]:
    fields.setdefault("collection", HANDBOOK)
    answer, citations, finished = [], [], None
    async for event in gateway.Ask(gateway_pb2.AskRequest(question=question, **fields), timeout=T):
        if event.HasField("citations"):
            assert not answer, "citations come before the answer"
            citations = list(event.citations.citations)
        elif event.HasField("finished"):
            finished = event.finished
        else:
            answer.append(event.delta)
    assert finished is not None, "the stream ends with a finished event"
    return "".join(answer), citations, finished


async def test_sample_corpus_is_indexed(handbook, gateway):
    files = [p for p in CORPUS.rglob("*") if p.suffix in {".md", ".html"}]
    assert len(handbook) == len(files)
    # Other modules of the session (the HTTP API's) index the same collection; what they
    # wrote first is UNCHANGED here, and nothing is written twice.
    written = [r for r in handbook if r.status == gateway_pb2.INGEST_STATUS_WRITTEN]
    unchanged = [r for r in handbook if r.status == gateway_pb2.INGEST_STATUS_UNCHANGED]
    assert len(written) + len(unchanged) == len(handbook), handbook
    assert all(r.chunks_written > 0 for r in written)
    assert all(r.chunks_written == 0 and r.chunks_deleted == 0 for r in unchanged)
    listed = await gateway.ListDocuments(
        gateway_pb2.GatewayServiceListDocumentsRequest(collection=HANDBOOK, page_size=1000),
        timeout=T,
    )
    assert sorted(d.doc_id for d in listed.documents) == sorted(r.doc_id for r in handbook)
    assert all(d.chunk_count > 0 for d in listed.documents)


async def test_reingesting_unchanged_corpus_writes_nothing(channels, handbook):
    client = GrpcClient(channels["gateway"])
    again = await cli.ingest(client, [CORPUS], collection=HANDBOOK, out=io.StringIO())
    assert {r.status for r in again} == {gateway_pb2.INGEST_STATUS_UNCHANGED}
    assert sum(r.chunks_written for r in again) == 0


async def test_answerable_question_cites_its_document(gateway, handbook):
    q = next(q for q in QUESTIONS if q["id"] == DEMO_QUESTION_ID)
    answer, citations, finished = await ask(gateway, q["question"])
    assert not finished.abstained
    assert answer.strip()
    assert q["relevant_doc_ids"][0] in {c.doc_id for c in citations}
    assert [c.index for c in citations] == list(range(1, len(citations) + 1))
    assert all(c.title and c.source for c in citations)
    assert finished.usage.prompt_tokens > 0 and finished.usage.completion_tokens > 0
    assert finished.timings.total_ms >= finished.timings.generate_ms > 0


async def test_unanswerable_question_says_it_does_not_know(gateway, handbook):
    q = next(q for q in QUESTIONS if not q["answerable"])
    answer, citations, finished = await ask(gateway, q["question"])
    assert finished.abstained or "don't know" in answer.lower()


async def test_question_naming_what_no_document_mentions_is_not_answered(gateway, handbook):
    # Close in meaning to the deploy runbook, but about a platform the handbook never names.
    answer, citations, finished = await ask(
        gateway, "How do I roll back a bad deploy of ledger-api on Heroku?"
    )
    assert finished.abstained and not citations
    assert "don't know" in answer
    assert finished.abstain_reason == gateway_pb2.ABSTAIN_REASON_UNKNOWN_NAMES
    assert list(finished.unknown_names) == ["Heroku"]


async def test_a_name_the_context_misses_but_the_corpus_knows_is_answered(gateway, handbook):
    question = (
        "How long are messages kept in a dead-letter queue, and who on team Foundry can purge them?"
    )
    # The prompt's chunks (the queue-replay runbook) never say "Foundry"; other documents
    # do (the CI pipeline's owner), so the retriever's keyword lookup of the collection
    # keeps the question: a check of the prompt's chunks alone would have turned it away.
    found = await gateway.Search(
        gateway_pb2.GatewayServiceSearchRequest(collection=HANDBOOK, query=question), timeout=T
    )
    assert len(found.hits) == 3
    assert not any(
        "foundry" in normal(f"{h.chunk.title} {h.chunk.section} {h.chunk.text}") for h in found.hits
    )
    assert list(found.unknown_names) == []
    assert found.abstain_reason == gateway_pb2.ABSTAIN_REASON_UNSPECIFIED
    answer, citations, finished = await ask(gateway, question)
    assert not finished.abstained, answer
    assert "runbooks/queue-replay.md" in {c.doc_id for c in citations}


async def test_ask_unary_returns_the_whole_answer(gateway, handbook):
    q = next(q for q in QUESTIONS if q["id"] == DEMO_QUESTION_ID)
    reply = await gateway.AskUnary(
        gateway_pb2.AskUnaryRequest(
            request=gateway_pb2.AskRequest(collection=HANDBOOK, question=q["question"])
        ),
        timeout=T,
    )
    streamed, citations, _ = await ask(gateway, q["question"])
    assert reply.answer == streamed  # greedy decoding: same answer both ways
    assert [c.chunk_id for c in reply.citations] == [c.chunk_id for c in citations]


async def test_changed_document_leaves_no_stale_chunks(gateway, retriever):
    sections = "\n\n".join(
        f"## Part {i}\n\n" + f"Paragraph about topic {i}. " * 60 for i in range(6)
    )
    first = await gateway.Ingest(
        gateway_pb2.IngestRequest(
            collection="changes", documents=[markdown("doc.md", "# Doc\n\n" + sections)]
        ),
        timeout=T,
    )
    assert first.results[0].status == gateway_pb2.INGEST_STATUS_WRITTEN
    written = first.results[0].chunks_written
    assert written >= 6

    second = await gateway.Ingest(
        gateway_pb2.IngestRequest(
            collection="changes",
            documents=[markdown("doc.md", "# Doc\n\n## Part 0\n\nOnly this is left.")],
        ),
        timeout=T,
    )
    result = second.results[0]
    assert result.status == gateway_pb2.INGEST_STATUS_WRITTEN
    assert result.chunks_written == 1
    assert result.chunks_deleted == written  # every old chunk changed or went away
    listed = await retriever.ListDocuments(
        retriever_pb2.ListDocumentsRequest(collection=local("changes"), doc_ids=["doc.md"]),
        timeout=T,
    )
    assert [d.chunk_count for d in listed.documents] == [1]


async def test_delete_document_removes_its_chunks(gateway, retriever):
    await gateway.Ingest(
        gateway_pb2.IngestRequest(
            collection="deletes", documents=[markdown("gone.md", "# Gone\n\nSoon deleted.")]
        ),
        timeout=T,
    )
    reply = await gateway.DeleteDocument(
        gateway_pb2.GatewayServiceDeleteDocumentRequest(collection="deletes", doc_id="gone.md"),
        timeout=T,
    )
    assert reply.chunks_deleted == 1
    listed = await retriever.ListDocuments(
        retriever_pb2.ListDocumentsRequest(collection=local("deletes")), timeout=T
    )
    assert list(listed.documents) == []


async def test_collection_of_another_model_is_refused(gateway, retriever):
    other = common_pb2.ModelIdentity(id="other/embedder", revision="r2", dimension=384)
    await retriever.CreateCollection(
        retriever_pb2.CreateCollectionRequest(name=local("foreign"), model=other), timeout=T
    )
    for call in (
        gateway.Ingest(
            gateway_pb2.IngestRequest(
                collection="foreign", documents=[markdown("a.md", "# A\n\nx")]
            ),
            timeout=T,
        ),
        gateway.AskUnary(
            gateway_pb2.AskUnaryRequest(
                request=gateway_pb2.AskRequest(collection="foreign", question="what is x?")
            ),
            timeout=T,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "other/embedder" in err.value.details()
        assert "all-MiniLM-L6-v2" in err.value.details()


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (gateway_pb2.AskRequest(question="  "), grpc.StatusCode.INVALID_ARGUMENT),
        (gateway_pb2.AskRequest(question="x", top_k=500), grpc.StatusCode.INVALID_ARGUMENT),
        (
            gateway_pb2.AskRequest(question="x", collection="no such"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (gateway_pb2.AskRequest(question="x", collection="missing"), grpc.StatusCode.NOT_FOUND),
        (
            gateway_pb2.AskRequest(question="x", collection=HANDBOOK, extra_collections=["9x"]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            gateway_pb2.AskRequest(
                question="x",
                collection=HANDBOOK,
                rerank=common_pb2.Rerank(mode=common_pb2.RERANK_MODE_ON, candidates=500),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (  # not a value of the enum
            gateway_pb2.AskRequest(question="x", collection=HANDBOOK, identifier_boost=7),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_bad_questions_get_clear_statuses(gateway, request_, code):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gateway.AskUnary(gateway_pb2.AskUnaryRequest(request=request_), timeout=T)
    assert err.value.code() == code
    assert "Traceback" not in err.value.details()


async def test_bad_documents_get_clear_statuses(gateway):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gateway.Ingest(gateway_pb2.IngestRequest(collection="bad"), timeout=T)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    reply = await gateway.Ingest(
        gateway_pb2.IngestRequest(
            collection="bad",
            documents=[
                gateway_pb2.Document(doc_id="binary.txt", content=b"\xff\xfe\x00\x81 not text"),
                gateway_pb2.Document(doc_id="empty.md", content=b"   \n"),
                markdown("fine.md", "# Fine\n\nThis one is indexed."),
            ],
        ),
        timeout=T,
    )
    statuses = {r.doc_id: (r.status, r.error) for r in reply.results}
    assert statuses["binary.txt"][0] == gateway_pb2.INGEST_STATUS_FAILED
    assert "UTF-8" in statuses["binary.txt"][1]
    assert statuses["empty.md"][0] == gateway_pb2.INGEST_STATUS_FAILED
    assert statuses["fine.md"][0] == gateway_pb2.INGEST_STATUS_WRITTEN


async def test_oversized_request_is_refused(gateway):
    huge = gateway_pb2.Document(doc_id="huge.txt", content=b"a " * (40 * 1024 * 1024))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gateway.Ingest(gateway_pb2.IngestRequest(documents=[huge]), timeout=T)
    assert err.value.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )


async def test_embedder_refuses_text_longer_than_the_model_takes(channels):
    embedder = embedder_pb2_grpc.EmbedderServiceStub(channels["embedder"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await embedder.Embed(embedder_pb2.EmbedRequest(texts=["word " * 1000]), timeout=T)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 256" in err.value.details()


async def test_embedder_info_reports_its_batch_caps(channels):
    embedder = embedder_pb2_grpc.EmbedderServiceStub(channels["embedder"])
    info = await embedder.Info(embedder_pb2.EmbedderServiceInfoRequest(), timeout=T)
    assert (info.max_batch_size, info.max_batch_tokens) == (256, 16384)  # the defaults


async def test_concurrent_embedding_and_token_counting_do_not_interfere(channels):
    """Embed batches and Tokenize calls run on different threads of one embedder. (The race
    this guards against, shared tokenizer state, shows under load only by chance.)"""
    embedder = embedder_pb2_grpc.EmbedderServiceStub(channels["embedder"])
    # Uneven lengths: a batch needs padding, a count must not have it.
    texts = [f"sentence number {i} " + "word " * (i * 7 % 200) for i in range(32)]
    calls = []
    for _ in range(24):
        calls.append(embedder.Embed(embedder_pb2.EmbedRequest(texts=texts), timeout=T))
        calls.append(embedder.Tokenize(embedder_pb2.TokenizeRequest(texts=texts), timeout=T))
    replies = await asyncio.gather(*calls)
    for reply in replies[0::2]:
        assert len(reply.embeddings) == len(texts)
    counts = {tuple(reply.token_counts) for reply in replies[1::2]}
    assert len(counts) == 1  # the same texts always count the same


async def test_cancelled_ask_frees_the_generator(gateway, channels, handbook):
    generator = generator_pb2_grpc.GeneratorServiceStub(channels["generator"])
    q = next(q for q in QUESTIONS if q["id"] == DEMO_QUESTION_ID)
    call = gateway.Ask(
        gateway_pb2.AskRequest(collection=HANDBOOK, question=q["question"], max_tokens=400),
        timeout=T,
    )
    async for event in call:
        if event.delta:
            break
    running = await generator.Info(generator_pb2.GeneratorServiceInfoRequest(), timeout=T)
    assert running.running_requests == 1
    call.cancel()
    for _ in range(50):
        info = await generator.Info(generator_pb2.GeneratorServiceInfoRequest(), timeout=T)
        if info.running_requests == 0:
            break
        await asyncio.sleep(0.1)
    assert info.running_requests == 0


async def test_status_reports_every_service_serving(running_stack):
    out = io.StringIO()
    assert await cli.status(running_stack, out=out)
    text = out.getvalue()
    for name in (*stack.STORES, *stack.SERVICES):
        assert name in text
    assert "all-MiniLM-L6-v2" in text and "SmolLM2" in text


async def test_tags_and_several_collections_reach_the_retriever(gateway, handbook):
    docs = [
        gateway_pb2.Document(
            doc_id="pager.md",
            source="tests/pager.md",
            content=b"# Pager\n\nThe zebra pager rotation changes every Tuesday at 09:00.",
            tags=["oncall"],
        ),
        gateway_pb2.Document(
            doc_id="zoo.md",
            source="tests/zoo.md",
            content=b"# Zoo\n\nThe zebra enclosure opens every Tuesday at 10:00.",
            tags=["animals"],
        ),
    ]
    reply = await gateway.Ingest(
        gateway_pb2.IngestRequest(collection="tagged", documents=docs), timeout=T
    )
    assert all(r.status == gateway_pb2.INGEST_STATUS_WRITTEN for r in reply.results)
    _, citations, finished = await ask(
        gateway,
        "When does the zebra rotation change?",
        collection="tagged",
        filter=common_pb2.MetadataFilter(tags=["animals"]),
        max_tokens=8,
    )
    assert {c.doc_id for c in citations} <= {"zoo.md"}
    _, citations, _ = await ask(
        gateway,
        "When does the zebra pager rotation change, and how do I roll back a deploy?",
        collection="tagged",
        extra_collections=[HANDBOOK],
        top_k=10,
        max_tokens=8,
    )
    assert {c.collection for c in citations} == {"tagged", HANDBOOK}


async def test_reranked_answer_cites_its_document(gateway, handbook):
    answer, citations, finished = await ask(
        gateway,
        "How do I roll back a bad deploy of ledger-api?",
        rerank=common_pb2.Rerank(mode=common_pb2.RERANK_MODE_ON, candidates=10),
        max_tokens=16,
    )
    assert not finished.abstained
    assert finished.timings.rerank_ms > 0
    assert finished.timings.retrieve_ms >= finished.timings.rerank_ms
    assert "runbooks/deploy.md" in {c.doc_id for c in citations}


async def test_evaluation_runs_every_mode_against_the_stack(channels, handbook):
    questions = [
        q
        for q in evaluation.load_questions(CORPUS.parent / "handbook-questions.jsonl")
        if q.id in ("q01", "q27", "q41")
    ]
    evaluator = evaluation.Evaluator(channels["gateway"], HANDBOOK)
    modes = ["dense", "hybrid-no-boost", "hybrid-weighted", "hybrid+rerank"]
    await evaluator.check_modes(questions[0].question, modes)
    report = await evaluator.evaluate(questions, modes, 5, {"hybrid+rerank"}, out=io.StringIO())
    assert set(report["modes"]) == set(modes)
    reranked = report["modes"]["hybrid+rerank"]
    assert reranked["retrieval_latency_ms_p50"]["rerank_ms"] > 0
    assert report["modes"]["dense"]["retrieval_latency_ms_p50"]["rerank_ms"] == 0
    assert 0 <= reranked["mrr@10"] <= 1 and "answer_accuracy" in reranked
    assert "answer_accuracy" not in report["modes"]["dense"]
    assert reranked["answer_errors"] == 0
    assert evaluation.format_table(report).count("\n") == len(modes) + 1


async def test_search_returns_the_chunks_an_ask_cites(gateway, handbook):
    question = "How do I roll back a bad deploy of ledger-api?"
    found = await gateway.Search(
        gateway_pb2.GatewayServiceSearchRequest(collection=HANDBOOK, query=question), timeout=T
    )
    _, citations, finished = await ask(gateway, question, max_tokens=8)
    assert [h.chunk.id for h in found.hits] == [c.chunk_id for c in citations]
    assert found.abstain_reason == finished.abstain_reason == 0
    assert all(h.chunk.text and h.relevance > 0 for h in found.hits)
    assert citations[0].text == found.hits[0].chunk.text
    assert found.timings.embed_ms > 0 and found.timings.total_ms >= found.timings.retrieve_ms
    deeper = await gateway.Search(
        gateway_pb2.GatewayServiceSearchRequest(collection=HANDBOOK, query=question, top_k=20),
        timeout=T,
    )
    assert len(deeper.hits) == 20
    assert [h.chunk.id for h in deeper.hits[:3]] == [h.chunk.id for h in found.hits]


async def test_search_says_why_an_ask_would_abstain(gateway, handbook):
    async def reason(query: str) -> int:
        found = await gateway.Search(
            gateway_pb2.GatewayServiceSearchRequest(collection=HANDBOOK, query=query), timeout=T
        )
        return found.abstain_reason

    assert await reason("What is the price of tea in the canteen?") == (
        gateway_pb2.ABSTAIN_REASON_LOW_RELEVANCE
    )
    assert await reason("How do I roll back a bad deploy of ledger-api on Heroku?") == (
        gateway_pb2.ABSTAIN_REASON_UNKNOWN_NAMES
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gateway.Search(gateway_pb2.GatewayServiceSearchRequest(query=" "), timeout=T)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
