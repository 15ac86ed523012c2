"""Document loading: Markdown, HTML, plain text, PDF, DOCX and PPTX into titled, sectioned
blocks (the binary formats in extraction.py)."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from bs4 import BeautifulSoup, CData, NavigableString, PageElement, Tag

from ragplane.errors import InvalidArgument, UnsupportedMediaType

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
TEXT_MEDIA_TYPES = ("text/markdown", "text/html", "text/plain")
SUPPORTED_MEDIA_TYPES = (*TEXT_MEDIA_TYPES, PDF, DOCX, PPTX)
_MEDIA_TYPE_ALIASES = {"text/x-markdown": "text/markdown", "application/xhtml+xml": "text/html"}
_SUFFIXES = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".csv": "text/plain",
    ".log": "text/plain",
    ".pdf": PDF,
    ".docx": DOCX,
    ".pptx": PPTX,
}
# What a folder ingest reads: every suffix above.
SUPPORTED_SUFFIXES = frozenset(_SUFFIXES)
_MAX_PLAIN_TITLE = 80

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
# A backtick fence's info string may not contain backticks (that is inline code).
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}(?=[^`]*$)|~{3,})")
_LIST_ITEM = re.compile(r"^[ \t]*([-*+]|\d{1,9}[.)])([ \t]+|$)")
_INDENTED_CODE = re.compile(r"^( {4}|\t)")
_BLOCKQUOTE = re.compile(r"^ {0,3}> ?")
_FRONT_MATTER_LINE = re.compile(r"^([\w-]+\s*:|[ \t]|-|#|$)")
_FRONT_MATTER_TITLE = re.compile(r"^title\s*:\s*(.+?)\s*$")

_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_HTML_BLOCKS = frozenset(
    {"p", "li", "dt", "dd", "blockquote", "figcaption", "caption", "address", "summary"}
)
_HTML_DROP = ("script", "style", "nav", "footer", "noscript", "template", "svg", "iframe")
# Navigation chrome without a <nav>: DocBook's previous / up / next tables (PostgreSQL,
# Linux kernel, many manuals) name the neighbouring pages, not this one's content.
_HTML_DROP_CLASSES = ("navheader", "navfooter")
# A list whose links carry this share of its text (and that has this many links) is a
# list of links: a table of contents, a back-of-book index, a release-notes list. It
# answers nothing (the pages it links to do) and outranks them on their own words.
# Content lists stay under it: a definition list whose terms link to their pages, or
# "name - description" lists, carry a third or less; indexes and contents half or more.
_LINK_LIST_SHARE = 0.4
_LINK_LIST_MIN_LINKS = 3
_HTML_LISTS = ("ul", "ol", "dl")
_NOT_WORD = re.compile(r"\W+")
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)
_HTML_INLINE = frozenset(
    "a abbr b bdi bdo cite code data del dfn em i img ins kbd label mark q s samp small span"
    " strong sub sup time u var wbr".split()
)


@dataclass(frozen=True)
class Block:
    """A paragraph, list, code block or table row under its heading path."""

    heading_path: tuple[str, ...]
    text: str
    # Introduces the block after it (a definition term, a paragraph ending in ":"), so a
    # chunk should not end with it.
    leads: bool = False


@dataclass(frozen=True)
class LoadedDocument:
    """A document's title and its blocks in reading order."""

    title: str
    blocks: list[Block]


def guess_media_type(source: str) -> str:
    """Media type from the file extension of a path or URL: plain text without one, the
    registered type (or application/octet-stream) of a suffix ragplane does not read, so
    that a .rst or .xlsx file is refused by name rather than indexed as text."""
    path = source.split("?", 1)[0].split("#", 1)[0]
    suffix = PurePosixPath(path).suffix.lower()
    if not suffix or suffix in _SUFFIXES:
        return _SUFFIXES.get(suffix, "text/plain")
    return mimetypes.guess_type(f"x{suffix}")[0] or "application/octet-stream"


def media_type_of(media_type: str, source: str) -> str:
    """The media type a document is read as (given, else guessed from its source, aliases
    resolved); UnsupportedMediaType, naming it, when ragplane cannot read it."""
    given = media_type or guess_media_type(source)
    base = given.split(";", 1)[0].strip().lower()
    base = _MEDIA_TYPE_ALIASES.get(base, base)
    if base not in SUPPORTED_MEDIA_TYPES:
        suffix = PurePosixPath(source.split("?", 1)[0]).suffix
        named = f"{given!r} ({suffix} file)" if suffix and not media_type else repr(given)
        raise UnsupportedMediaType(
            f"document {source!r} has unsupported media type {named}; supported: "
            + ", ".join(SUPPORTED_MEDIA_TYPES)
        )
    return base


def load_document(content: bytes, media_type: str, source: str, title: str = "") -> LoadedDocument:
    """Decodes and parses a document; bad input raises InvalidArgument naming the document.

    The title is `title` when given, else the document's own (first H1, <title>, front
    matter or first short line), else the file name without its extension.
    """
    base = media_type_of(media_type, source)
    if base in TEXT_MEDIA_TYPES:
        parsers = {"text/markdown": _markdown, "text/html": _html, "text/plain": _plain}
        found_title, blocks = parsers[base](_decode(content, source))
    else:
        found_title, blocks = _binary(base, content, source)
    if not blocks:
        raise InvalidArgument(
            f"document {source!r} has no text once markup is removed; send a document with "
            "prose, lists or code"
        )
    return LoadedDocument(prose(title) or found_title or PurePosixPath(source).stem, blocks)


def _binary(media_type: str, content: bytes, source: str) -> tuple[str, list[Block]]:
    # Imported here: extraction.py builds on this module's blocks.
    from ragplane.gateway import extraction

    readers: dict[str, Callable[[bytes, str], tuple[str, list[Block]]]] = {
        PDF: extraction.read_pdf,
        DOCX: extraction.read_docx,
        PPTX: extraction.read_pptx,
    }
    if not content:
        raise InvalidArgument(f"document {source!r} is empty; send a document with text")
    return readers[media_type](content, source)


def _decode(content: bytes, source: str) -> str:
    try:
        # utf-8-sig: a leading byte-order mark would otherwise hide the first heading.
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"document {source!r} is not valid UTF-8 text: {exc}; convert it to UTF-8"
        ) from None
    if "\x00" in text:
        raise InvalidArgument(f"document {source!r} contains NUL bytes; is it a binary file?")
    if not text.strip():
        raise InvalidArgument(f"document {source!r} is empty; send a document with text")
    return text


def prose(text: str) -> str:
    return " ".join(text.split())


def _leads_in(prose: str) -> bool:
    """Prose ending in a colon ("The general form is:") introduces what follows it."""
    return prose.endswith(":")


class Sections:
    """Tracks the heading path while blocks are collected."""

    def __init__(self, title: str = "") -> None:
        self.path: list[tuple[int, str]] = []
        self.blocks: list[Block] = []
        self.title = title

    def heading(self, level: int, text: str) -> None:
        text = prose(text)
        if not text:
            return
        if level == 1 and not self.title:
            self.title = text
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text))

    def extend_heading(self, text: str) -> None:
        """Continues the last heading (a PDF heading wrapped onto a second line)."""
        if not self.path:
            return
        level, heading = self.path[-1]
        joined = prose(f"{heading} {text}")
        if self.title == heading:
            self.title = joined
        self.path[-1] = (level, joined)

    def add(self, text: str, *, leads: bool = False, suffix: str = "") -> None:
        """Adds a block whose text is already normalised (prose collapsed, code verbatim);
        `suffix` ends its heading path (a PDF's page: "p. 4")."""
        if text.strip():
            path = tuple(h for _, h in self.path)
            self.blocks.append(Block((*path, suffix) if suffix else path, text, leads))

    def add_prose(self, text: str, *, term: bool = False, suffix: str = "") -> None:
        """Adds prose; a term, or prose ending in a colon, leads into the next block."""
        self.add(text, leads=term or _leads_in(text), suffix=suffix)


# --- Markdown ---------------------------------------------------------------------------


def _markdown(text: str) -> tuple[str, list[Block]]:
    return _MarkdownReader(text).read()


class _MarkdownReader:
    """A line scanner for the block structure of Markdown (CommonMark's common cases)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.i = 0
        self.sections = Sections(self._front_matter_title())
        self.paragraph: list[str] = []
        self.listing = False  # the open paragraph is a list

    def read(self) -> tuple[str, list[Block]]:
        while self.i < len(self.lines):
            line = self.lines[self.i]
            self.i += 1
            self._line(line)
        self._flush()
        return self.sections.title, self.sections.blocks

    def _line(self, line: str) -> None:
        if fence := _FENCE_OPEN.match(line):
            self._flush()
            self._fenced_code(line, fence.group(1))
        elif heading := _ATX_HEADING.match(line):
            self._flush()
            self.sections.heading(len(heading.group(1)), heading.group(2) or "")
        elif self.paragraph and not self.listing and _SETEXT_UNDERLINE.match(line):
            text, self.paragraph = " ".join(self.paragraph), []
            self.sections.heading(1 if line.strip()[0] == "=" else 2, text)
        elif _THEMATIC_BREAK.match(line):
            self._flush()
        elif not line.strip():
            if not (self.listing and self._list_continues()):
                self._flush()
        elif self._starts_item(line):
            if not self.listing:
                self._flush()
                self.listing = True
            self.paragraph.append(line)
        elif not self.paragraph and _INDENTED_CODE.match(line):
            self._indented_code(line)
        else:
            self.paragraph.append(line)

    def _starts_item(self, line: str) -> bool:
        """A list item; inside prose only "-", "*", "+" or "1." start a list, so a wrapped
        line that happens to begin with "2024." stays in its paragraph."""
        item = _LIST_ITEM.match(line)
        if not item or self.listing or not self.paragraph:
            return bool(item)
        return item.group(1)[0] in "-*+" or item.group(1)[:-1] == "1"

    def _front_matter_title(self) -> str:
        """Skips YAML front matter (between --- lines) and returns its title, if any."""
        if not self.lines or self.lines[0].strip() != "---":
            return ""
        for end in range(1, len(self.lines)):
            line = self.lines[end]
            if line.strip() in ("---", "..."):
                self.i = end + 1
                meta = (_FRONT_MATTER_TITLE.match(x) for x in self.lines[1:end])
                return next((m.group(1).strip("'\"") for m in meta if m), "")
            if not _FRONT_MATTER_LINE.match(line):
                return ""  # not YAML: a thematic break that opens the document
        return ""

    def _list_continues(self) -> bool:
        """A blank line inside a list: the list goes on if an item or indented text follows.
        Skips the blank lines, so a long run of them is read once."""
        while self.i < len(self.lines) and not self.lines[self.i].strip():
            self.i += 1
        following = self.lines[self.i] if self.i < len(self.lines) else ""
        return bool(_LIST_ITEM.match(following) or following[:1] in (" ", "\t"))

    def _fenced_code(self, opening: str, fence: str) -> None:
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        code = [opening]
        while self.i < len(self.lines):
            line = self.lines[self.i]
            self.i += 1
            code.append(line)
            if closing.match(line):
                break
        else:
            code.append(fence)  # unclosed: the fence runs to the end of the document
        self.sections.add("\n".join(code))

    def _indented_code(self, first: str) -> None:
        code = [first]
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() and not _INDENTED_CODE.match(line):
                break
            code.append(line)
            self.i += 1
        dedented = [x[1:] if x.startswith("\t") else x[4:] for x in code]
        self.sections.add("\n".join(dedented).rstrip())

    def _flush(self) -> None:
        lines, self.paragraph = self.paragraph, []
        listing, self.listing = self.listing, False
        if not lines:
            return
        if listing:
            self.sections.add("\n".join(_list_items(lines)))
        elif all(x.lstrip().startswith("|") for x in lines):
            self.sections.add("\n".join(prose(x) for x in lines))  # a table: a row a line
        else:
            self.sections.add_prose(prose(" ".join(_BLOCKQUOTE.sub("", x) for x in lines)))


def _list_items(lines: list[str]) -> list[str]:
    """One line per item, nested items keep their indentation, wrapped lines are joined."""
    items: list[str] = []
    for line in lines:
        if _LIST_ITEM.match(line) or not items:
            indent = line[: len(line) - len(line.lstrip())].replace("\t", "    ")
            items.append(indent + prose(line))
        else:
            items[-1] += " " + prose(line)
    return items


# --- HTML -------------------------------------------------------------------------------


def _html(text: str) -> tuple[str, list[Block]]:
    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(list(_HTML_DROP)):
        tag.decompose()
    for tag in soup(class_=list(_HTML_DROP_CLASSES)):
        tag.decompose()
    for tag in soup(list(_HTML_LISTS)):
        if not tag.decomposed and _is_link_list(tag):
            tag.decompose()
    for tag in soup("header"):
        # A page header without headings is chrome (logo, links); an article's keeps its H1.
        if not tag.find(list(_HTML_HEADINGS)):
            tag.decompose()
    title = prose(soup.title.get_text()) if soup.title else ""
    for tag in soup(["head", "title"]):
        tag.decompose()
    reader = _HtmlReader()
    try:
        reader.read(soup.body or soup)
    except RecursionError:
        raise InvalidArgument("HTML nests too deeply to read; simplify the markup") from None
    return title or reader.sections.title, reader.sections.blocks


class _HtmlReader:
    """Walks the tree: headings open sections, block elements and table rows become blocks,
    and loose text between them (inside a <div>, say) becomes a block of its own."""

    def __init__(self) -> None:
        self.sections = Sections()
        self.loose: list[str] = []

    def read(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, Tag):
                self._element(child)
            elif _is_text(child):
                self.loose.append(str(child))
        self._flush()

    def _element(self, element: Tag) -> None:
        name = element.name
        if name in _HTML_INLINE or name == "br":
            self.loose.append(_html_text(element))
            return
        self._flush()
        if name in _HTML_HEADINGS:
            self.sections.heading(_HTML_HEADINGS[name], _html_text(element))
        elif name == "pre":
            self.sections.add(element.get_text().strip("\n"))
        elif name == "tr":
            cells = [prose(_html_text(c)) for c in element.find_all(["td", "th"], recursive=False)]
            self.sections.add(" | ".join(c for c in cells if c))
        elif name in _HTML_BLOCKS:
            self.sections.add_prose(prose(_html_text(element)), term=name == "dt")
        else:
            self.read(element)

    def _flush(self) -> None:
        text, self.loose = prose("".join(self.loose)), []
        self.sections.add_prose(text)


def _is_link_list(element: Tag) -> bool:
    """Whether a list is mostly links to other pages of the same site (see
    _LINK_LIST_SHARE), counting word characters. Links out to other sites are references
    in content (a list of acronyms, each linked to its definition), not navigation."""
    links = [a for a in element.find_all("a", href=True) if not _EXTERNAL.match(str(a.get("href")))]
    if len(links) < _LINK_LIST_MIN_LINKS:
        return False
    total = len(_NOT_WORD.sub("", element.get_text()))
    linked = sum(len(_NOT_WORD.sub("", a.get_text())) for a in links)
    return total > 0 and linked >= _LINK_LIST_SHARE * total


def _is_text(node: object) -> bool:
    # Comments, doctypes and processing instructions are NavigableStrings too.
    return type(node) in (NavigableString, CData)


def _html_text(node: PageElement) -> str:
    """Text with a space where a block boundary or <br> separates words, none inside words."""
    if not isinstance(node, Tag):
        return str(node) if _is_text(node) else ""
    if node.name == "br":
        return " "
    inner = "".join(_html_text(child) for child in node.children)
    return inner if node.name in _HTML_INLINE else f" {inner} "


# --- Plain text -------------------------------------------------------------------------


def _plain(text: str) -> tuple[str, list[Block]]:
    paragraphs = [prose(p) for p in re.split(r"\n[ \t\r\f\v]*\n", text) if p.strip()]
    first_line = text.strip().splitlines()[0].strip() if paragraphs else ""
    title = prose(first_line) if len(first_line) <= _MAX_PLAIN_TITLE else ""
    return title, [Block((), p, _leads_in(p)) for p in paragraphs]
