"""samples/handbook-followups.jsonl, the multi-turn set of `python -m evals.followups`:
schema, the mix of follow-ups, and that each answer phrase really occurs in a document the
row names."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from evals.followups import FOLLOWUPS, load_followups
from tests.unit.evals.test_eval_sets import HANDBOOK, collapse, document_text, load

KEYS = {"id", "kind", "history", "question", "relevant_doc_ids", "answer_phrase"}
KINDS = {"same-document", "other-document"}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return load(FOLLOWUPS)


def test_rows_have_the_schema(rows):
    assert rows, "the follow-ups set is empty"
    problems = []
    for row in rows:
        name = row.get("id", row)
        if set(row) != KEYS:
            problems.append(f"{name}: keys {sorted(row)} != {sorted(KEYS)}")
            continue
        if not isinstance(row["id"], str) or not re.fullmatch(r"f\d{2,}", row["id"]):
            problems.append(f"{name}: id does not match f01, f02, ...")
        if row["kind"] not in KINDS:
            problems.append(f"{name}: kind {row['kind']!r} not one of {sorted(KINDS)}")
        history = row["history"]
        if not isinstance(history, list) or not history:
            problems.append(f"{name}: history must be a non-empty list")
        elif not all(isinstance(h, str) and h.strip() for h in history):
            problems.append(f"{name}: history holds an empty or non-string turn")
        if not isinstance(row["question"], str) or not row["question"].strip():
            problems.append(f"{name}: empty question")
        docs = row["relevant_doc_ids"]
        if not isinstance(docs, list) or not docs or not all(isinstance(d, str) for d in docs):
            problems.append(f"{name}: relevant_doc_ids must be a non-empty list of strings")
        elif len(set(docs)) != len(docs):
            problems.append(f"{name}: relevant_doc_ids repeats a document")
        phrase = row["answer_phrase"]
        if not isinstance(phrase, str) or not phrase.strip():
            problems.append(f"{name}: empty answer_phrase")
    assert not problems, "\n".join(problems)


def test_ids_and_questions_are_unique(rows):
    ids = Counter(row["id"] for row in rows)
    assert not [i for i, n in ids.items() if n > 1], f"duplicate ids: {ids.most_common(3)}"
    questions = Counter(collapse(row["question"]) for row in rows)
    assert not [q for q, n in questions.items() if n > 1], "duplicate follow-ups"


def test_half_the_follow_ups_move_to_another_document(rows):
    assert Counter(row["kind"] for row in rows) == {"same-document": 12, "other-document": 12}


def test_relevant_documents_exist(rows):
    missing = [
        f"{row['id']}: {doc}"
        for row in rows
        for doc in row["relevant_doc_ids"]
        if not (HANDBOOK / doc).is_file()
    ]
    assert not missing, f"no such documents under samples/handbook: {missing}"


def test_answer_phrase_occurs_in_a_relevant_document(rows):
    problems = []
    for row in rows:
        phrase = collapse(row["answer_phrase"])
        paths = [HANDBOOK / doc for doc in row["relevant_doc_ids"]]
        if not any(p.is_file() and phrase in document_text(p) for p in paths):
            problems.append(f"{row['id']}: {row['answer_phrase']!r} is in none of {paths}")
    assert not problems, "\n".join(problems)


def test_the_loader_reads_every_row(rows):
    loaded = load_followups(FOLLOWUPS)
    assert [f.id for f in loaded] == [row["id"] for row in rows]
    assert all(f.history and f.relevant for f in loaded)
