"""Query-adaptive fusion: which hybrid queries fuse as configured and which, in plain
language, fuse dense-weighted (the measured effect is in docs/retrieval.md; the real
path against Milvus in tests/integration)."""

from __future__ import annotations

import pytest

from ragplane.errors import ConfigError
from ragplane.names import exact_terms
from ragplane.retriever.rerank import RerankerSettings
from ragplane.retriever.settings import PLAIN_DENSE_WEIGHT, RetrieverSettings
from ragplane.retriever.store import Fusion
from ragplane.retriever.validation import SearchDefaults, search_query
from ragplane.v1 import common_pb2, retriever_pb2

PLAIN = Fusion("weighted", dense_weight=0.8, keyword_weight=0.2)
RERANKER = RerankerSettings("none", "", "", "", "", False, 20, 0.2, 512, 8)


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ("What does SQLSTATE 40P01 mean?", ["40P01", "SQLSTATE"]),
        ("What does max_wal_senders limit?", ["max_wal_senders"]),
        ("What does pg_dump --no-owner do?", ["pg_dump", "no-owner"]),
        ("Which file does ALTER SYSTEM write to?", ["ALTER SYSTEM", "SYSTEM"]),
        ("What lock does TRUNCATE take?", ["TRUNCATE"]),
        ("What status do results of PQgetResult have?", ["PQgetResult"]),
        ("What should I call instead of plpy.execute?", ["plpy.execute"]),
        ("Which quoting function is format() like?", ["format"]),
    ],
)
def test_code_and_sql_in_a_question_are_exact_terms(query, terms):
    assert exact_terms(query) == terms


@pytest.mark.parametrize(
    "query",
    [
        "How do I keep the write-ahead log a disconnected standby still needs?",
        "Is WAL on an SSD safe with JSON columns in PostgreSQL on RHEL?",
        "How can I see which tables sit in shared memory, e.g. right now?",
    ],
)
def test_plain_language_names_no_exact_term(query):
    # Hyphenated words, acronyms and product names are how users write plain questions.
    assert exact_terms(query) == []


def defaults(plain: Fusion | None) -> SearchDefaults:
    return SearchDefaults(Fusion(), True, RERANKER, reranker_available=False, plain_fusion=plain)


def fusion_of(text: str, chosen: SearchDefaults, **fields) -> Fusion:
    request = retriever_pb2.SearchRequest(
        collection="pg",
        model=common_pb2.ModelIdentity(id="test/model", revision="r1", dimension=4),
        query_vector=[1.0, 0, 0, 0],
        query_text=text,
        **fields,
    )
    return search_query(request, chosen).fusion


def test_identifier_queries_fuse_as_configured_and_plain_ones_dense_weighted():
    adaptive = defaults(PLAIN)
    assert fusion_of("What does SQLSTATE 40P01 mean?", adaptive) == Fusion()
    assert fusion_of("How do I stop a runaway query?", adaptive) == PLAIN
    # Without a plain fusion every query fuses as configured.
    assert fusion_of("How do I stop a runaway query?", defaults(None)) == Fusion()


def test_a_request_that_chooses_its_fusion_gets_it():
    rrf = common_pb2.Fusion(method=common_pb2.FUSION_METHOD_RRF)
    assert fusion_of("How do I stop a runaway query?", defaults(PLAIN), fusion=rrf).method == "rrf"


def test_adaptive_fusion_is_on_by_default_and_can_be_turned_off(monkeypatch):
    plain = RetrieverSettings.from_env().plain_fusion
    assert plain is not None and plain.method == "weighted"
    assert (plain.dense_weight, plain.keyword_weight) == pytest.approx(
        (PLAIN_DENSE_WEIGHT, 1 - PLAIN_DENSE_WEIGHT)
    )
    monkeypatch.setenv("RAGPLANE_FUSION_PLAIN_DENSE_WEIGHT", "0.7")
    plain = RetrieverSettings.from_env().plain_fusion
    assert plain is not None
    assert (plain.dense_weight, plain.keyword_weight) == pytest.approx((0.7, 0.3))
    monkeypatch.setenv("RAGPLANE_FUSION_PLAIN_DENSE_WEIGHT", "1.5")
    with pytest.raises(ConfigError, match="RAGPLANE_FUSION_PLAIN_DENSE_WEIGHT"):
        RetrieverSettings.from_env()
    monkeypatch.setenv("RAGPLANE_FUSION_ADAPTIVE", "false")
    assert RetrieverSettings.from_env().plain_fusion is None
