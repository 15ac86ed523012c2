"""bench.harness.publish: a benchmark's JSON report, and its table between a document's
markers, the text around them kept."""

from __future__ import annotations

import json

import pytest

from bench.harness import publish

BEGIN, END = "<!-- t: begin -->", "<!-- t: end -->"


def test_the_table_replaces_only_what_lies_between_the_markers(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{BEGIN}\nold table\n{END}\nafter\n")
    out = tmp_path / "results" / "r.json"
    publish({"x": 1}, "| new |\n", out, doc, BEGIN, END)
    assert doc.read_text() == f"before\n{BEGIN}\n| new |\n{END}\nafter\n"
    assert json.loads(out.read_text()) == {"x": 1}
    assert "| new |" in capsys.readouterr().out


def test_a_document_without_the_markers_is_an_error(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="has no markers"):
        publish({}, "t\n", tmp_path / "r.json", doc, BEGIN, END)
    assert doc.read_text() == "no markers\n"
