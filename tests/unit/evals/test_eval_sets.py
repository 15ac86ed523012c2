"""The evaluation question sets in samples/: schema, kind counts, and that every answerable
question's answer phrase really occurs in a document it names.

samples/postgres-questions.jsonl is over Debian's PostgreSQL 15 HTML documentation
(package postgresql-doc-15); its corpus checks are skipped when that package is not
installed. samples/handbook-questions.jsonl is over samples/handbook/.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "samples"
POSTGRES_QUESTIONS = SAMPLES / "postgres-questions.jsonl"
HANDBOOK_QUESTIONS = SAMPLES / "handbook-questions.jsonl"
HANDBOOK = SAMPLES / "handbook"
PG_DOCS = Path("/usr/share/doc/postgresql-doc-15/html")

KEYS = {"id", "question", "relevant_doc_ids", "answer_phrase", "answerable", "kind"}
KINDS = {"identifier", "paraphrase", "factual", "unanswerable"}
POSTGRES_MIN_KINDS = {"identifier": 60, "paraphrase": 60, "factual": 55, "unanswerable": 28}
POSTGRES_MIN_TOTAL = 200
HANDBOOK_MIN_KINDS = {"identifier": 30, "paraphrase": 30, "factual": 35, "unanswerable": 18}
HANDBOOK_MIN_TOTAL = 115
MAX_PHRASE_WORDS = 5


def load(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                pytest.fail(f"{path.name}:{number} is not valid JSON: {exc}")
    return rows


def collapse(text: str) -> str:
    return " ".join(text.split()).lower()


# Inline elements join their text to the neighbours' ("pg_stat_<em>x</em>" reads
# "pg_stat_x"); every other element boundary counts as whitespace ("</td><td>").
_INLINE = frozenset(
    "a abbr acronym b bdi bdo cite code data del dfn em i img ins kbd label mark q s samp"
    " small span strong sub sup time tt u var wbr".split()
)
_SKIPPED = frozenset({"script", "style", "head", "title"})


class _TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIPPED:
            self.skipping += 1
        if tag not in _INLINE:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        if tag not in _INLINE:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_text(markup: str) -> str:
    parser = _TextOf()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts)


@functools.cache
def document_text(path: Path) -> str:
    """A document's text, lower-cased with whitespace collapsed; HTML without its tags."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".html", ".htm"):
        raw = html_text(raw)
    return collapse(raw)


def check_schema(rows: list[dict], id_pattern: str) -> None:
    assert rows, "the question set is empty"
    problems = []
    for row in rows:
        name = row.get("id", row)
        if set(row) != KEYS:
            problems.append(f"{name}: keys {sorted(row)} != {sorted(KEYS)}")
            continue
        if not isinstance(row["id"], str) or not re.fullmatch(id_pattern, row["id"]):
            problems.append(f"{name}: id does not match {id_pattern}")
        if not isinstance(row["question"], str) or not row["question"].strip():
            problems.append(f"{name}: empty question")
        if row["kind"] not in KINDS:
            problems.append(f"{name}: kind {row['kind']!r} not one of {sorted(KINDS)}")
        if not isinstance(row["answerable"], bool):
            problems.append(f"{name}: answerable must be true or false")
        docs, phrase = row["relevant_doc_ids"], row["answer_phrase"]
        if not isinstance(docs, list) or not all(isinstance(d, str) and d for d in docs):
            problems.append(f"{name}: relevant_doc_ids must be a list of non-empty strings")
            continue
        if len(set(docs)) != len(docs):
            problems.append(f"{name}: relevant_doc_ids repeats a document")
        if not isinstance(phrase, str):
            problems.append(f"{name}: answer_phrase must be a string")
            continue
        if row["answerable"] != (row["kind"] != "unanswerable"):
            problems.append(f"{name}: answerable is {row['answerable']} for kind {row['kind']}")
        if row["answerable"]:
            if not docs:
                problems.append(f"{name}: answerable but no relevant_doc_ids")
            if not 1 <= len(phrase.split()) <= MAX_PHRASE_WORDS:
                problems.append(f"{name}: answer_phrase {phrase!r} is not 1-5 words")
        elif docs or phrase:
            problems.append(f"{name}: unanswerable but has relevant_doc_ids or answer_phrase")
    assert not problems, "\n".join(problems)
    ids = Counter(row["id"] for row in rows)
    assert not [i for i, n in ids.items() if n > 1], f"duplicate ids: {ids.most_common(3)}"
    questions = Counter(collapse(row["question"]) for row in rows)
    repeated = [q for q, n in questions.items() if n > 1]
    assert not repeated, f"duplicate questions: {repeated}"


# --- PostgreSQL 15 documentation -----------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_rows() -> list[dict]:
    return load(POSTGRES_QUESTIONS)


def test_postgres_questions_schema(postgres_rows):
    check_schema(postgres_rows, r"pg\d{2,}")
    for row in postgres_rows:
        for doc in row["relevant_doc_ids"]:
            assert re.fullmatch(r"[\w.-]+\.html", doc), f"{row['id']}: {doc!r} is not a page name"


def check_counts(rows: list[dict], total: int, minimums: dict[str, int]) -> None:
    kinds = Counter(row["kind"] for row in rows)
    assert len(rows) >= total, f"only {len(rows)} questions"
    short = {k: (kinds[k], n) for k, n in minimums.items() if kinds[k] < n}
    assert not short, f"too few questions of these kinds (have, need): {short}"


def test_postgres_questions_kind_counts(postgres_rows):
    check_counts(postgres_rows, POSTGRES_MIN_TOTAL, POSTGRES_MIN_KINDS)


def test_postgres_questions_spread_over_the_docs(postgres_rows):
    pages = {doc for row in postgres_rows for doc in row["relevant_doc_ids"]}
    assert len(pages) >= 150, f"answers come from only {len(pages)} pages"


def test_postgres_answer_phrases_occur_in_a_relevant_page(postgres_rows):
    if not PG_DOCS.is_dir():
        pytest.skip(
            f"{PG_DOCS} is missing: install the postgresql-doc-15 package "
            "(apt-get install postgresql-doc-15) to check phrases against the corpus"
        )
    problems = []
    for row in postgres_rows:
        if not row["answerable"]:
            continue
        pages = [PG_DOCS / doc for doc in row["relevant_doc_ids"]]
        missing = [p.name for p in pages if not p.is_file()]
        if missing:
            problems.append(f"{row['id']}: no such page {missing}")
            continue
        phrase = collapse(row["answer_phrase"])
        if not any(phrase in document_text(p) for p in pages):
            docs = row["relevant_doc_ids"]
            problems.append(f"{row['id']}: {row['answer_phrase']!r} is in none of {docs}")
    assert not problems, "\n".join(problems)


# --- the Kestrel Labs handbook -------------------------------------------------------------


@pytest.fixture(scope="module")
def handbook_rows() -> list[dict]:
    return load(HANDBOOK_QUESTIONS)


def test_handbook_questions_schema(handbook_rows):
    check_schema(handbook_rows, r"q\d{2,}")


def test_handbook_questions_kind_counts(handbook_rows):
    check_counts(handbook_rows, HANDBOOK_MIN_TOTAL, HANDBOOK_MIN_KINDS)


def test_handbook_questions_cover_every_document(handbook_rows):
    documents = {str(p.relative_to(HANDBOOK)) for p in HANDBOOK.rglob("*") if p.is_file()}
    named = {doc for row in handbook_rows for doc in row["relevant_doc_ids"]}
    assert documents - named == set(), "documents no question is about"


def test_handbook_answer_phrases_occur_in_every_relevant_document(handbook_rows):
    """samples/README.md: the phrase occurs verbatim in every relevant document."""
    problems = []
    for row in handbook_rows:
        if not row["answerable"]:
            continue
        phrase = collapse(row["answer_phrase"])
        for doc in row["relevant_doc_ids"]:
            path = HANDBOOK / doc
            if not path.is_file():
                problems.append(f"{row['id']}: no such document {doc}")
            elif phrase not in document_text(path):
                problems.append(f"{row['id']}: {row['answer_phrase']!r} is not in {doc}")
    assert not problems, "\n".join(problems)
