"""PDF, DOCX and PPTX into the same titled, sectioned blocks as the text formats.

pypdf, python-docx and python-pptx: pure-Python readers (lxml and Pillow the only
compiled parts), a few MB installed, no model to download; docling and unstructured
bring torch and layout models for what these files do not need (docs/api.md, Formats).
A PDF's headings are its lines set larger than the body text, and every block's
heading path ends with its page ("p. 4"), so that a citation says where to look. A
DOCX's headings are its Heading and Title styles; a PPTX's are its slide titles, with
the slide's number ("slide 3").
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from ragplane.errors import InvalidArgument
from ragplane.gateway.loaders import Block, Sections, prose

# A PDF line is a heading when set this much larger than the body text.
HEADING_SCALE = 1.15
# A vertical gap over this many line heights ends a PDF paragraph.
PARAGRAPH_GAP = 1.6
_BULLET = re.compile(r"^\s*([•◦▪‣]\s*|[-–*]\s+|\d{1,3}[.)]\s+)")
_DOCX_HEADING = re.compile(r"^Heading (\d)$")

# pypdf logs every malformed object it reads past; the document's outcome says enough.
logging.getLogger("pypdf").setLevel(logging.ERROR)


def _broken(kind: str, source: str, exc: Exception) -> InvalidArgument:
    return InvalidArgument(f"document {source!r} is not a readable {kind} file: {exc}")


# --- PDF --------------------------------------------------------------------------------


@dataclass
class _Line:
    page: int
    y: float
    size: float
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return prose("".join(self.parts))


def read_pdf(content: bytes, source: str) -> tuple[str, list[Block]]:
    """The PDF's title (its metadata's, else its first heading) and its blocks."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted:
            raise InvalidArgument(f"document {source!r} is an encrypted PDF; send it unlocked")
        lines = [
            line for number, page in enumerate(reader.pages, 1) for line in _lines(page, number)
        ]
        meta_title = prose(str(reader.metadata.get("/Title") or "") if reader.metadata else "")
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise _broken("PDF", source, exc) from None
    if not lines:
        raise InvalidArgument(
            f"document {source!r} is a PDF without a text layer (a scan?); send one with "
            "text, or OCR it first"
        )
    sections = Sections(meta_title)
    body = _body_size(lines)
    levels = {size: level for level, size in enumerate(_heading_sizes(lines, body), 1)}
    paragraph: list[_Line] = []

    def flush() -> None:
        if paragraph:
            _add_pdf_paragraph(sections, paragraph)
            paragraph.clear()

    previous: _Line | None = None
    for line in lines:
        level = levels.get(round(line.size))
        if level is not None:
            flush()
            if (
                previous is not None
                and levels.get(round(previous.size)) == level
                and (previous.page == line.page)
            ):
                sections.extend_heading(line.text)  # a heading wrapped onto two lines
            else:
                sections.heading(level, line.text)
        else:
            gap = (
                previous is not None
                and previous.page == line.page
                and (abs(previous.y - line.y) > PARAGRAPH_GAP * line.size)
            )
            if paragraph and (paragraph[-1].page != line.page or gap or _BULLET.match(line.text)):
                if not (_BULLET.match(paragraph[0].text) and _BULLET.match(line.text)):
                    flush()
            paragraph.append(line)
        previous = line
    flush()
    return sections.title, sections.blocks


def _lines(page, number: int) -> Iterator[_Line]:
    """The page's text lines, each with its largest font size (text matrix scale)."""
    current: _Line | None = None

    def visit(text: str, cm, tm, font, size: float) -> None:
        nonlocal current
        scale = abs(tm[3] * cm[3]) if tm[3] and cm[3] else 1.0
        y = tm[5] * cm[3] + cm[5]
        for i, piece in enumerate(text.split("\n")):
            if i > 0 and current is not None:
                finished.append(current)
                current = None
            if not piece.strip():
                continue
            if current is None:
                current = _Line(number, y, size * scale)
            current.parts.append(piece)
            current.size = max(current.size, size * scale)

    finished: list[_Line] = []
    page.extract_text(visitor_text=visit)
    if current is not None:
        finished.append(current)
    yield from (line for line in finished if line.text)


def _body_size(lines: list[_Line]) -> int:
    """The font size most of the text is set in."""
    weights: Counter[int] = Counter()
    for line in lines:
        weights[round(line.size)] += len(line.text)
    return weights.most_common(1)[0][0]


def _heading_sizes(lines: list[_Line], body: int) -> list[int]:
    """Sizes above the body's, largest first: heading levels 1, 2, ..."""
    sizes = {round(line.size) for line in lines if line.size >= body * HEADING_SCALE}
    return sorted(sizes, reverse=True)[:6]


def _add_pdf_paragraph(sections: Sections, lines: list[_Line]) -> None:
    page = f"p. {lines[0].page}"
    if _BULLET.match(lines[0].text):
        items: list[str] = []
        for line in lines:
            if _BULLET.match(line.text) or not items:
                items.append(_item(line.text))
            else:
                items[-1] += " " + line.text
        sections.add("\n".join(items), suffix=page)
    else:
        sections.add_prose(_joined_lines(line.text for line in lines), suffix=page)


def _item(text: str) -> str:
    """A list item as Markdown writes it: a bullet glyph becomes "- ", numbers stay."""
    bullet = _BULLET.match(text)
    if bullet and bullet.group(1).strip() in "•◦▪‣":
        return "- " + text[bullet.end() :]
    return text


def _joined_lines(lines: Iterator[str]) -> str:
    """Lines of one paragraph as prose; a word hyphenated across lines is rejoined."""
    text = ""
    for line in lines:
        if text.endswith("-") and line[:1].islower() and not text.endswith(" -"):
            text = text[:-1] + line
        else:
            text = f"{text} {line}" if text else line
    return prose(text)


# --- DOCX -------------------------------------------------------------------------------


def read_docx(content: bytes, source: str) -> tuple[str, list[Block]]:
    """The DOCX's title (core properties, Title style or first Heading 1) and blocks:
    paragraphs, list items and table rows in document order."""
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(content))
    except Exception as exc:  # noqa: BLE001 - python-docx raises many kinds on bad input
        raise _broken("DOCX", source, exc) from None
    sections = Sections(prose(document.core_properties.title or ""))
    listing: list[str] = []

    def flush_list() -> None:
        if listing:
            sections.add("\n".join(listing))
            listing.clear()

    for item in document.iter_inner_content():
        if isinstance(item, Table):
            flush_list()
            for row in item.rows:
                cells = [prose(cell.text) for cell in row.cells]
                sections.add(" | ".join(dict.fromkeys(c for c in cells if c)))
            continue
        assert isinstance(item, Paragraph)
        text = prose(item.text)
        style = item.style.name if item.style is not None else ""
        heading = _DOCX_HEADING.match(style)
        if style == "Title" or heading:
            flush_list()
            sections.heading(int(heading.group(1)) if heading else 1, text)
        elif style.startswith("List") or item._p.pPr is not None and item._p.pPr.numPr is not None:
            if text:
                listing.append(f"- {text}")
        else:
            flush_list()
            sections.add_prose(text)
    flush_list()
    return sections.title, sections.blocks


# --- PPTX -------------------------------------------------------------------------------


def read_pptx(content: bytes, source: str) -> tuple[str, list[Block]]:
    """One section per slide, named by its title and number ("Rollback > slide 3")."""
    from pptx import Presentation

    try:
        deck = Presentation(io.BytesIO(content))
    except Exception as exc:  # noqa: BLE001 - python-pptx raises many kinds on bad input
        raise _broken("PPTX", source, exc) from None
    sections = Sections(prose(deck.core_properties.title or ""))
    for number, slide in enumerate(deck.slides, 1):
        title_shape = slide.shapes.title
        title = prose(title_shape.text_frame.text) if title_shape is not None else ""
        sections.heading(1, title or f"Slide {number}")
        for shape in slide.shapes:
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            if shape.has_text_frame:
                paragraphs = [prose(p.text) for p in shape.text_frame.paragraphs]
                lines = [p for p in paragraphs if p]
                if lines:
                    sections.add("\n".join(lines), suffix=f"slide {number}")
            elif getattr(shape, "has_table", False) and shape.has_table:
                for row in shape.table.rows:
                    cells = [prose(cell.text) for cell in row.cells]
                    sections.add(" | ".join(c for c in cells if c), suffix=f"slide {number}")
        if slide.has_notes_slide:
            notes = prose(slide.notes_slide.notes_text_frame.text)
            sections.add_prose(notes, suffix=f"slide {number}")
    return sections.title, sections.blocks
