"""Document loading: Markdown, HTML and plain text into titled, sectioned blocks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from ragplane.errors import InvalidArgument

SUPPORTED_MEDIA_TYPES = ("text/markdown", "text/html", "text/plain")
_SUFFIXES = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".txt": "text/plain",
}
_ATX_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT_UNDERLINE = re.compile(r"^(=+|-+)\s*$")
_FENCE = re.compile(r"^(```|~~~)")
_LIST_ITEM = re.compile(r"^\s*([-*+]|\d+[.)])\s+")
_HTML_BLOCKS = ("p", "li", "pre", "td", "th", "dd", "dt", "blockquote", "figcaption")
_HTML_DROP = ("script", "style", "nav", "footer", "header", "noscript", "template")


@dataclass(frozen=True)
class Block:
    """A paragraph, list, code block or table cell under its heading path."""

    heading_path: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class LoadedDocument:
    title: str
    blocks: list[Block]


def guess_media_type(source: str) -> str:
    return _SUFFIXES.get(PurePosixPath(source).suffix.lower(), "text/plain")


def load_document(content: bytes, media_type: str, source: str, title: str = "") -> LoadedDocument:
    """Decodes and parses a document; bad input raises InvalidArgument naming the document."""
    if media_type not in SUPPORTED_MEDIA_TYPES:
        raise InvalidArgument(
            f"document {source!r} has media type {media_type!r}; supported: "
            + ", ".join(SUPPORTED_MEDIA_TYPES)
        )
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"document {source!r} is not valid UTF-8 text: {exc}") from None
    if not text.strip():
        raise InvalidArgument(f"document {source!r} is empty")
    parse = {"text/markdown": _markdown, "text/html": _html, "text/plain": _plain}[media_type]
    found_title, blocks = parse(text)
    if not blocks:
        raise InvalidArgument(f"document {source!r} has no text")
    return LoadedDocument(title or found_title or PurePosixPath(source).stem, blocks)


def _prose(text: str) -> str:
    return " ".join(text.split())


class _Sections:
    """Tracks the heading path while blocks are collected."""

    def __init__(self) -> None:
        self.path: list[tuple[int, str]] = []
        self.blocks: list[Block] = []
        self.title = ""

    def heading(self, level: int, text: str) -> None:
        text = _prose(text)
        if not text:
            return
        if level == 1 and not self.title:
            self.title = text
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text))

    def add(self, text: str, *, verbatim: bool = False, lines: bool = False) -> None:
        """Adds a block: code verbatim, lists one item per line, prose collapsed."""
        if verbatim:
            text = text.strip("\n")
        elif lines:
            text = "\n".join(_prose(x) for x in text.splitlines() if x.strip())
        else:
            text = _prose(text)
        if text.strip():
            self.blocks.append(Block(tuple(h for _, h in self.path), text))


def _markdown(text: str) -> tuple[str, list[Block]]:
    sections = _Sections()
    lines = text.splitlines()
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            is_list = all(_LIST_ITEM.match(x) or x.startswith((" ", "\t")) for x in paragraph)
            sections.add("\n".join(paragraph), lines=is_list)
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line.strip()):
            flush()
            fence = line.strip()[:3]
            code = [line]
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                code.append(lines[i])
                i += 1
            code.append(lines[i] if i < len(lines) else fence)
            sections.add("\n".join(code), verbatim=True)
        elif heading := _ATX_HEADING.match(line):
            flush()
            sections.heading(len(heading.group(1)), heading.group(2))
        elif (
            line.strip()
            and i + 1 < len(lines)
            and _SETEXT_UNDERLINE.match(lines[i + 1])
            and not paragraph
        ):
            sections.heading(1 if lines[i + 1].startswith("=") else 2, line)
            i += 1
        elif not line.strip():
            flush()
        else:
            paragraph.append(line)
        i += 1
    flush()
    return sections.title, sections.blocks


def _html(text: str) -> tuple[str, list[Block]]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(list(_HTML_DROP)):
        tag.decompose()
    sections = _Sections()
    title = _prose(soup.title.get_text()) if soup.title else ""
    body = soup.body or soup
    for element in body.find_all(["h1", "h2", "h3", "h4", "h5", "h6", *_HTML_BLOCKS]):
        if element.name[0] == "h" and element.name[1:].isdigit():
            sections.heading(int(element.name[1]), element.get_text(" "))
        elif element.name == "pre":
            sections.add(element.get_text(), verbatim=True)
        elif not element.find_parent(["pre", *_HTML_BLOCKS]):
            # Nested blocks (a <p> inside an <li>) count once, with their parent.
            sections.add(element.get_text(" "))
    return title or sections.title, sections.blocks


def _plain(text: str) -> tuple[str, list[Block]]:
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    first = paragraphs[0].strip().splitlines()[0].strip() if paragraphs else ""
    title = first if len(first) <= 80 else ""
    return title, [Block((), _prose(p)) for p in paragraphs]
