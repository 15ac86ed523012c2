"""Loading Markdown, HTML, plain text, PDF, DOCX and PPTX into titled, sectioned blocks."""

from __future__ import annotations

import io

import pytest

from ragplane.errors import InvalidArgument, UnsupportedMediaType
from ragplane.gateway.loaders import (
    DOCX,
    PDF,
    PPTX,
    LoadedDocument,
    guess_media_type,
    load_document,
)
from tests.support import ROOT

FORMATS = ROOT / "samples" / "formats"


def blocks(doc: LoadedDocument) -> list[tuple[tuple[str, ...], str]]:
    return [(b.heading_path, b.text) for b in doc.blocks]


def markdown(text: str, **kwargs) -> LoadedDocument:
    return load_document(text.encode(), "text/markdown", "docs/a.md", **kwargs)


def html(text: str) -> LoadedDocument:
    return load_document(text.encode(), "text/html", "docs/page.html")


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
    doc = markdown(text)
    assert doc.title == "Title"
    assert blocks(doc) == [
        (("Title",), "First paragraph continues here."),
        (("Title", "Setup"), "- one\n- two"),
        (("Title", "Setup"), "```python\nx = 1\n\ny = 2\n```"),
        (("Title", "Sub heading"), "Last."),
    ]


def test_markdown_heading_path_is_a_stack():
    doc = markdown("# A\n\n## B\n\n### C\n\nc\n\n## D\n\nd\n\n# E\n\ne\n")
    assert blocks(doc) == [(("A", "B", "C"), "c"), (("A", "D"), "d"), (("E",), "e")]


def test_markdown_fence_is_never_split_and_hides_headings():
    text = "# Ops\n\n~~~~sh\n# not a heading\n\nkctl status\n```\nstill code\n~~~~\n\nAfter.\n"
    assert blocks(markdown(text)) == [
        (("Ops",), "~~~~sh\n# not a heading\n\nkctl status\n```\nstill code\n~~~~"),
        (("Ops",), "After."),
    ]


def test_markdown_unclosed_fence_runs_to_the_end():
    doc = markdown("# T\n\n```\ncode\n\nmore code\n")
    assert blocks(doc) == [(("T",), "```\ncode\n\nmore code\n```")]


def test_markdown_list_is_one_block_even_when_loose_or_nested():
    text = """Steps:
- first item
  wraps here

- second item
  - nested item
1. numbered

After the list.
"""
    assert [b.text for b in markdown(text).blocks] == [
        "Steps:",
        "- first item wraps here\n- second item\n  - nested item\n1. numbered",
        "After the list.",
    ]


def test_markdown_number_at_a_line_start_does_not_open_a_list():
    doc = markdown("The release shipped in\n2024. It went well.\n")
    assert [b.text for b in doc.blocks] == ["The release shipped in 2024. It went well."]


def test_markdown_heading_forms():
    text = "Title\n=====\n\n## C# tips ##\n\nUse it.\n\n---\n\n#hashtag is text\n"
    doc = markdown(text)
    assert doc.title == "Title"
    assert blocks(doc) == [
        (("Title", "C# tips"), "Use it."),
        (("Title", "C# tips"), "#hashtag is text"),
    ]


def test_markdown_front_matter_gives_the_title_and_is_not_text():
    doc = markdown('---\ntitle: "Deploy guide"\ntags: [ops]\n---\n\nBody text.\n')
    assert doc.title == "Deploy guide"
    assert [b.text for b in doc.blocks] == ["Body text."]


def test_markdown_tables_quotes_and_indented_code():
    text = (
        "| a | b |\n|---|---|\n| 1 |  2 |\n\n"
        "> quoted\n> text\n\n"
        "    def f():\n        return 1\n\n    f()\n\nEnd.\n"
    )
    assert [b.text for b in markdown(text).blocks] == [
        "| a | b |\n|---|---|\n| 1 | 2 |",
        "quoted text",
        "def f():\n    return 1\n\nf()",
        "End.",
    ]


def test_markdown_byte_order_mark_does_not_hide_the_title():
    doc = load_document("\ufeff# Title\n\ntext".encode(), "text/markdown", "a.md")
    assert doc.title == "Title"


def test_html_title_headings_and_dropped_scripts():
    page = """<html><head><title>Runbook</title><style>p{}</style></head><body>
    <nav>menu</nav><h1>Deploy</h1><p>Use the   canary.</p><script>alert(1)</script>
    <h2>Commands</h2><pre>kctl deploy
  --canary 10</pre><ul><li><p>nested item</p></li></ul><footer>(c) 2026</footer></body></html>"""
    doc = html(page)
    assert doc.title == "Runbook"
    assert blocks(doc) == [
        (("Deploy",), "Use the canary."),
        (("Deploy", "Commands"), "kctl deploy\n  --canary 10"),
        (("Deploy", "Commands"), "nested item"),
    ]


def test_html_title_from_first_h1_and_loose_text_in_divs():
    page = """<body><header><a href="/">Logo</a></header>
    <article><header><h1>Ledger <em>API</em></h1></header>
    <div>Loose <b>text</b>, in a div.<!-- a comment --><p>A paragraph.</p>tail</div>
    <table><tr><th>Owner</th><th>Port</th></tr><tr><td>Atlas</td><td>8080</td></tr></table>
    <p>Run <code>kctl</code>.<br>Then wait.</p></article></body>"""
    doc = html(page)
    assert doc.title == "Ledger API"
    assert [b.text for b in doc.blocks] == [
        "Loose text, in a div.",
        "A paragraph.",
        "tail",
        "Owner | Port",
        "Atlas | 8080",
        "Run kctl. Then wait.",
    ]
    assert all(b.heading_path == ("Ledger API",) for b in doc.blocks)


def test_definition_terms_and_colon_lead_ins_lead_into_the_next_block():
    page = """<body><h1>Settings</h1><div class="navheader"><table><tr><td>Prev</td>
    <td>Up</td><td>Next page</td></tr></table></div><dl><dt><code>port</code></dt>
    <dd><p>The port to connect to.</p></dd></dl><p>For example:</p><pre>port=5433</pre>
    <div class="navfooter">Home</div></body>"""
    assert [(b.text, b.leads) for b in html(page).blocks] == [
        ("port", True),
        ("The port to connect to.", False),
        ("For example:", True),
        ("port=5433", False),
    ]
    text = "# Deploy\n\nRun this:\n\n```\nkctl deploy\n```\n\nA list:\n\n- a:\n"
    assert [b.leads for b in markdown(text).blocks] == [True, False, True, False]
    plain = load_document(b"Notes\n\nSteps:\n\nDone.", "text/plain", "n.txt").blocks
    assert [b.leads for b in plain] == [False, True, False]


def test_lists_of_links_to_the_site_are_navigation_and_not_read():
    # A table of contents and a back-of-book index answer nothing: the pages they link
    # to do. Lists with links in their content, or links out to other sites, stay.
    page = """<body><h1>WAL</h1><dl class="toc"><dt><a href="wal-a.html">30.1 Reliability</a>
    </dt><dt><a href="wal-b.html">30.2 Checkpoints</a></dt><dt><a href="wal-c.html">30.3
    Internals</a></dt></dl><p>The log makes commits durable.</p><dl><dt>$libdir,
    <a href="xfunc.html">Dynamic Loading</a></dt><dt>ALTER TABLE, <a href="a.html">ALTER
    TABLE</a></dt><dt>vacuum, <a href="v.html">Routine Vacuuming</a></dt></dl>
    <ul><li><a href="sql-abort.html">ABORT</a> — abort the current transaction</li>
    <li><a href="sql-alter.html">ALTER</a> — change the definition of a table</li>
    <li><a href="sql-copy.html">COPY</a> — copy data between a file and a table</li></ul>
    <dl><dt><a href="https://en.wikipedia.org/wiki/ANSI">ANSI</a></dt><dd>American
    National Standards Institute</dd><dt><a href="https://en.wikipedia.org/wiki/TLS">TLS
    </a></dt><dd>Transport Layer Security</dd><dt><a href="https://x.org/wiki/XID">XID</a>
    </dt><dd>Transaction identifier</dd></dl></body>"""
    assert [b.text for b in html(page).blocks] == [
        "The log makes commits durable.",
        "ABORT — abort the current transaction",
        "ALTER — change the definition of a table",
        "COPY — copy data between a file and a table",
        "ANSI",
        "American National Standards Institute",
        "TLS",
        "Transport Layer Security",
        "XID",
        "Transaction identifier",
    ]


def test_html_without_text_is_refused():
    with pytest.raises(InvalidArgument, match="no text"):
        html("<html><body><script>x()</script><nav>menu</nav></body></html>")


def test_plain_text_paragraphs_and_title():
    doc = load_document(
        b"Release notes\r\n\r\nFixed a  bug.\n\n\nAdded a flag.", "text/plain", "n.txt"
    )
    assert doc.title == "Release notes"
    assert blocks(doc) == [((), "Release notes"), ((), "Fixed a bug."), ((), "Added a flag.")]


def test_plain_text_with_a_long_first_line_is_named_after_the_file():
    doc = load_document(("word " * 40).encode(), "text/plain", "notes/meeting.txt")
    assert doc.title == "meeting"


def test_caller_title_wins_and_file_stem_is_the_fallback():
    assert markdown("# A\n\nx", title="Given").title == "Given"
    assert load_document(b"just text", "text/markdown", "dir/notes.md").title == "notes"


def test_media_type_parameters_are_accepted():
    doc = load_document(b"# T\n\nx", "text/markdown; charset=utf-8", "a.md")
    assert blocks(doc) == [(("T",), "x")]


@pytest.mark.parametrize(
    ("content", "media_type", "message"),
    [
        (b"\xff\xfe\x00bad", "text/plain", "'x' is not valid UTF-8"),
        (b"   \n\n ", "text/markdown", "'x' is empty"),
        (b"ab\x00cd", "text/plain", "NUL bytes"),
        (b"= Title", "text/x-rst", "supported: text/markdown, text/html, text/plain"),
        (b"%PDF-1.7", "application/pdf", "'x' is not a readable PDF file"),
        (b"PK\x03\x04", DOCX, "'x' is not a readable DOCX file"),
    ],
)
def test_bad_documents_are_refused_with_a_reason(content, media_type, message):
    with pytest.raises(InvalidArgument, match=message):
        load_document(content, media_type, "x")


def test_media_type_from_the_file_name():
    assert guess_media_type("a/b.MD") == "text/markdown"
    assert guess_media_type("notes.markdown") == "text/markdown"
    assert guess_media_type("page.htm") == "text/html"
    assert guess_media_type("https://example.com/page.html?x=1#top") == "text/html"
    assert guess_media_type("a.txt") == "text/plain"
    assert guess_media_type("README") == "text/plain"
    assert guess_media_type("data.csv") == "text/plain"
    assert guess_media_type("slides.PPTX") == PPTX
    assert guess_media_type("report.pdf") == PDF
    assert guess_media_type("notes.rst") == "text/prs.fallenstein.rst"
    assert guess_media_type("archive.zzz") == "application/octet-stream"


# --- PDF, DOCX, PPTX (samples/formats: LibreOffice conversions of handbook pages) --------


def test_a_pdf_keeps_its_headings_and_pages_as_sections():
    path = FORMATS / "postmortems-2026.pdf"
    doc = load_document(path.read_bytes(), "", str(path))
    assert doc.title == "Postmortems 2026"  # the PDF's own title (its metadata)
    sections = [b.heading_path for b in doc.blocks]
    outage = "Postmortem: ledger-api outage on 2026-02-11"  # a heading wrapped onto 2 lines
    assert sections[0] == (outage, "Summary", "p. 1")
    assert (outage, "Root cause", "p. 1") in sections
    assert ("Postmortem: duplicate payouts on 2026-04-03", "Detection", "p. 2") in sections
    root_cause = next(b.text for b in doc.blocks if b.heading_path[1:] == ("Root cause", "p. 1"))
    assert "lowered max_pool_connections from 200 to 20" in root_cause
    timeline = next(b.text for b in doc.blocks if b.heading_path[1] == "Timeline")
    assert timeline.splitlines()[0] == (
        "- 13:20 UTC: the configuration change reaches all instances after a clean canary."
    )


def test_a_docx_keeps_its_headings_lists_and_code():
    path = FORMATS / "ledger-api.docx"
    doc = load_document(path.read_bytes(), DOCX, str(path))
    assert doc.title == "Service: ledger-api"
    assert {b.heading_path[-1] for b in doc.blocks} >= {"Overview", "SLOs", "Error codes"}
    overview = [b.text for b in doc.blocks if b.heading_path[-1] == "Overview"]
    assert any("- Owner: team Atlas" in text.splitlines() for text in overview)
    codes = next(b.text for b in doc.blocks if b.heading_path[-1] == "Error codes")
    assert "LEDG-4091 (HTTP 409)" in codes


def test_a_pptx_is_one_section_per_slide():
    from pptx import Presentation

    deck = Presentation()
    for title, body in [("Rollback", "kctl rollback --to previous"), ("Freeze", "Fridays")]:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    out = io.BytesIO()
    deck.save(out)
    doc = load_document(out.getvalue(), "", "deck.pptx")
    assert blocks(doc) == [
        (("Rollback", "slide 1"), "kctl rollback --to previous"),
        (("Freeze", "slide 2"), "Fridays"),
    ]


@pytest.mark.parametrize("name", ["guide.rst", "sheet.xlsx", "scan.png", "old.doc", "blob.zzz"])
def test_unsupported_types_are_refused_by_name_never_read_as_text(name):
    with pytest.raises(UnsupportedMediaType, match=rf"'{name}' has unsupported media type .*"):
        load_document(b"Title\n=====\n\ntext", "", name)


def test_a_pdf_without_text_is_refused():
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(InvalidArgument, match="without a text layer"):
        load_document(out.getvalue(), PDF, "scan.pdf")
