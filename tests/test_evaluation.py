"""The evaluation metrics on hand-computed rankings."""

from __future__ import annotations

import math

import pytest

from ragplane.evaluation import load_questions, ndcg_at, recall_at, reciprocal_rank, sweep

from .conftest import ROOT

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


def test_the_sample_questions_file_loads():
    questions = load_questions(ROOT / "samples" / "handbook-questions.jsonl")
    assert len(questions) >= 40
    assert {q.kind for q in questions} >= {"paraphrase", "identifier", "factual", "unanswerable"}
    assert all(q.relevant for q in questions if q.answerable)
