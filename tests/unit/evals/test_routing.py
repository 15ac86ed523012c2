"""Evaluation modes named by fusion weight, and query-adaptive fusion scored offline."""

from __future__ import annotations

from evals.evaluation import MODES, Question, mode_named
from evals.routing import routed
from ragplane.v1 import common_pb2


def test_weighted_modes_are_named_by_their_dense_weight():
    mode = mode_named("hybrid-weighted-0.8")
    assert mode is not None and mode.fusion is not None
    assert mode.fusion.method == common_pb2.FUSION_METHOD_WEIGHTED
    assert (round(mode.fusion.dense_weight, 3), round(mode.fusion.keyword_weight, 3)) == (0.8, 0.2)
    assert mode_named("hybrid") is MODES["hybrid"]
    assert mode_named("hybrid-weighted-1.5") is None
    assert mode_named("hybrid-weighted-x") is None
    assert mode_named("sparse") is None


def question(qid: str, text: str) -> Question:
    return Question(qid, text, frozenset({"a.html"}), "x", True, "identifier")


def test_identifier_questions_take_the_exact_mode_and_the_others_the_plain_one():
    questions = [question("q1", "What does SQLSTATE 40P01 mean?"), question("q2", "How do I undo?")]
    per_question = {
        mode: [{"id": q.id, "mode": mode} for q in questions] for mode in ("rrf", "dense")
    }
    rows = routed(per_question, questions, exact="rrf", plain="dense")
    assert [(r["id"], r["mode"]) for r in rows] == [("q1", "rrf"), ("q2", "dense")]
