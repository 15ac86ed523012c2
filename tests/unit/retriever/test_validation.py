"""Search requests checked and turned into typed queries, on hand-made requests (the
statuses callers see are in test_retriever.py)."""

from __future__ import annotations

import pytest

from ragplane.errors import FailedPrecondition, InvalidArgument
from ragplane.retriever.ranking import SearchMode
from ragplane.retriever.rerank import RerankerSettings
from ragplane.retriever.store import Fusion
from ragplane.retriever.validation import (
    MAX_NAME_TERMS,
    MAX_QUERY_CHARS,
    NameCheck,
    SearchDefaults,
    search_query,
)
from ragplane.v1 import common_pb2, retriever_pb2

MODEL = common_pb2.ModelIdentity(id="test/model", revision="r1", dimension=4)


@pytest.fixture
def defaults(monkeypatch) -> SearchDefaults:
    """A retriever without a reranker."""
    monkeypatch.setenv("RAGPLANE_RERANKER", "none")
    return SearchDefaults(Fusion(), True, RerankerSettings.from_env(), reranker_available=False)


def request(**fields) -> retriever_pb2.SearchRequest:
    return retriever_pb2.SearchRequest(collection="pg", model=MODEL, **fields)


def test_a_search_becomes_a_query_with_the_server_defaults(defaults):
    query = search_query(request(query_vector=[1.0, 0, 0, 0], query_text="wal"), defaults)
    assert (query.collections, query.mode, query.top_k) == (["pg"], SearchMode.HYBRID, 5)
    assert (query.text, query.vector, query.filter) == ("wal", [1.0, 0, 0, 0], "")
    assert (query.fusion, query.identifier_boost, query.rerank.on) == (Fusion(), True, False)
    assert query.name_check is None


def test_a_dense_search_does_not_read_its_text(defaults):
    long = "x" * (MAX_QUERY_CHARS + 1)
    dense = request(query_vector=[1.0, 0, 0, 0], query_text=long, mode=common_pb2.SEARCH_MODE_DENSE)
    assert search_query(dense, defaults).text is None
    keyword = request(query_text=long, mode=common_pb2.SEARCH_MODE_KEYWORD)
    with pytest.raises(InvalidArgument, match="query_text has 8193 characters"):
        search_query(keyword, defaults)


def test_reranking_without_a_reranker_is_refused(defaults):
    asked = request(query_text="wal", mode=common_pb2.SEARCH_MODE_KEYWORD)
    asked.rerank.mode = common_pb2.RERANK_MODE_ON
    with pytest.raises(FailedPrecondition, match="RAGPLANE_RERANKER=none"):
        search_query(asked, defaults)


def test_the_name_check_keeps_its_terms_in_order(defaults):
    checked = request(query_text="wal", mode=common_pb2.SEARCH_MODE_KEYWORD)
    checked.name_check.terms.extend(["Patroni", "pg_class.relpersistence"])
    checked.name_check.context_hits = 3
    assert search_query(checked, defaults).name_check == NameCheck(
        ["Patroni", "pg_class.relpersistence"], 3
    )
    checked.name_check.ClearField("terms")
    assert search_query(checked, defaults).name_check is None


def test_name_checks_past_the_limits_are_invalid(defaults):
    many = request(query_text="wal", mode=common_pb2.SEARCH_MODE_KEYWORD)
    many.name_check.terms.extend(f"Name{i}" for i in range(MAX_NAME_TERMS + 1))
    with pytest.raises(InvalidArgument, match="name_check.terms has 1001 names"):
        search_query(many, defaults)
    long = request(query_text="wal", mode=common_pb2.SEARCH_MODE_KEYWORD)
    long.name_check.terms.extend(["ok", "x" * (MAX_QUERY_CHARS + 1)])
    with pytest.raises(InvalidArgument, match=r"name_check.terms\[1\] has 8193 characters"):
        search_query(long, defaults)


def test_doc_hashes_carry_their_chunk_count_when_stored():
    from ragplane.retriever.schema import stamped, unstamped

    assert unstamped(stamped("abc", 3)) == ("abc", 3)
    assert unstamped("abc") == ("abc", None)  # written before counts were stamped
    assert unstamped("") == ("", None)
