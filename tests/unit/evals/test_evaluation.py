"""The evaluation metrics on hand-computed rankings."""

from __future__ import annotations

import math

import pytest

from evals.evaluation import (
    load_questions,
    ndcg_at,
    paired_differences,
    recall_at,
    reciprocal_rank,
    sweep,
)
from tests.support import ROOT

RELEVANT = frozenset({"a", "b"})


def test_recall_counts_relevant_documents_in_the_top_k():
    assert recall_at(["x", "a", "y", "b"], RELEVANT, 2) == 0.5
    assert recall_at(["x", "a", "y", "b"], RELEVANT, 4) == 1.0
    assert recall_at([], RELEVANT, 5) == 0.0


def test_reciprocal_rank_is_one_over_the_first_hit():
    assert reciprocal_rank(["x", "y", "b"], RELEVANT) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x"] * 10 + ["a"], RELEVANT) == 0.0  # beyond 10


def test_ndcg_is_one_for_an_ideal_ranking_and_less_otherwise():
    assert ndcg_at(["a", "b", "x"], RELEVANT) == pytest.approx(1.0)
    swapped = ndcg_at(["x", "a", "b"], RELEVANT)
    assert swapped == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))


def test_threshold_sweep_measures_both_sides():
    answerable = [{"best_relevance": v} for v in (0.3, 0.6, 0.7)]
    unanswerable = [{"best_relevance": v} for v in (0.1, 0.25)]
    at_035 = next(r for r in sweep(answerable, unanswerable) if r["threshold"] == 0.35)
    assert at_035["abstention_accuracy"] == 1.0
    assert at_035["false_abstention_rate"] == pytest.approx(1 / 3, abs=1e-3)


def test_threshold_sweep_adds_the_names_check():
    answerable = [{"best_relevance": 0.7, "missing_names": []}, {"best_relevance": 0.3}]
    unanswerable = [{"best_relevance": 0.6, "missing_names": ["MongoDB"]}]
    at_035 = next(r for r in sweep(answerable, unanswerable) if r["threshold"] == 0.35)
    assert at_035["abstention_accuracy"] == 0.0
    assert at_035["abstention_accuracy_with_names_check"] == 1.0
    assert at_035["false_abstention_rate_with_names_check"] == 0.5


def row(qid: str, value: float, answerable: bool = True) -> dict:
    return {"id": qid, "answerable": answerable, "recall": value, "rr": value, "ndcg": value}


def test_paired_differences_count_questions_and_bound_the_mean():
    dense = [row(f"q{i}", 0.5) for i in range(20)] + [row("u", 0.0, answerable=False)]
    # Better on every question: the interval excludes 0.
    better = [row(f"q{i}", 1.0) for i in range(20)]
    # Better on one, worse on another: the interval spans 0.
    mixed = [row("q0", 1.0), row("q1", 0.0)] + [row(f"q{i}", 0.5) for i in range(2, 20)]
    result = paired_differences({"dense": dense, "better": better, "mixed": mixed})
    assert set(result) == {"better", "mixed"}
    assert result["better"]["mrr@10"] == {
        "difference": 0.5,
        "ci95": [0.5, 0.5],
        "better": 20,
        "worse": 0,
    }
    low, high = result["mixed"]["recall@k"]["ci95"]
    assert low < 0 < high
    assert (result["mixed"]["recall@k"]["better"], result["mixed"]["recall@k"]["worse"]) == (1, 1)


def test_the_sample_questions_file_loads():
    questions = load_questions(ROOT / "samples" / "handbook-questions.jsonl")
    assert len(questions) >= 40
    assert {q.kind for q in questions} >= {"paraphrase", "identifier", "factual", "unanswerable"}
    assert all(q.relevant for q in questions if q.answerable)
