"""Loading Markdown, HTML and plain text into titled, sectioned blocks."""

from __future__ import annotations

import pytest

from ragplane.errors import InvalidArgument
from ragplane.gateway.loaders import guess_media_type, load_document


def test_markdown_headings_paragraphs_lists_and_fences():
    text = """# Title

First   paragraph
continues here.

## Setup

- one
- two

```python
x = 1

y = 2
```

Sub heading
-----------

Last.
"""
    doc = load_document(text.encode(), "text/markdown", "a.md")
    assert doc.title == "Title"
    assert [(b.heading_path, b.text) for b in doc.blocks] == [
        (("Title",), "First paragraph continues here."),
        (("Title", "Setup"), "- one\n- two"),
        (("Title", "Setup"), "```python\nx = 1\n\ny = 2\n```"),
        (("Title", "Sub heading"), "Last."),
    ]


def test_html_title_headings_and_dropped_scripts():
    html = b"""<html><head><title>Runbook</title><style>p{}</style></head><body>
    <nav>menu</nav><h1>Deploy</h1><p>Use the   canary.</p><script>alert(1)</script>
    <h2>Commands</h2><pre>kctl deploy
  --canary 10</pre><ul><li><p>nested item</p></li></ul></body></html>"""
    doc = load_document(html, "text/html", "r.html")
    assert doc.title == "Runbook"
    assert [(b.heading_path, b.text) for b in doc.blocks] == [
        (("Deploy",), "Use the canary."),
        (("Deploy", "Commands"), "kctl deploy\n  --canary 10"),
        (("Deploy", "Commands"), "nested item"),
    ]


def test_plain_text_paragraphs_and_title():
    doc = load_document(b"Release notes\n\nFixed a bug.\n\n\nAdded a flag.", "text/plain", "n.txt")
    assert doc.title == "Release notes"
    assert [b.text for b in doc.blocks] == ["Release notes", "Fixed a bug.", "Added a flag."]


def test_caller_title_wins_and_file_stem_is_the_fallback():
    assert load_document(b"# A\n\nx", "text/markdown", "a.md", title="Given").title == "Given"
    assert load_document(b"just text", "text/markdown", "dir/notes.md").title == "notes"


@pytest.mark.parametrize(
    ("content", "media_type", "message"),
    [
        (b"\xff\xfe\x00bad", "text/plain", "not valid UTF-8"),
        (b"   \n\n ", "text/markdown", "empty"),
        (b"%PDF-1.7", "application/pdf", "supported: text/markdown"),
    ],
)
def test_bad_documents_are_refused_with_a_reason(content, media_type, message):
    with pytest.raises(InvalidArgument, match=message):
        load_document(content, media_type, "x")


def test_media_type_from_the_file_name():
    assert guess_media_type("a/b.MD") == "text/markdown"
    assert guess_media_type("page.htm") == "text/html"
    assert guess_media_type("README") == "text/plain"
