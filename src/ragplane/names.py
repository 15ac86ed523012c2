"""The names a question uses, and whether a text mentions them.

Shared by the retriever, which ranks chunks that mention a query's identifiers first,
and the gateway, which abstains when the context mentions none of a question's names.
Matching ignores case and everything but letters and digits, so max-wal-senders finds
max_wal_senders, and Wi-Fi WiFi.
"""

from __future__ import annotations

import re

# Words, with the inner punctuation identifiers carry: max_wal_senders, db.r6g.large,
# --no-owner (as no-owner), Wi-Fi, 40P01.
_WORD = re.compile(r"(?:--)?[A-Za-z0-9](?:[\w.\-]*[A-Za-z0-9])?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_CODE_WORD = re.compile(r"[A-Za-z_][\w.]*[A-Za-z0-9_]")
_CAMEL = re.compile(r"[a-z][A-Z][a-z]")
_DOTTED = re.compile(r"[a-z_]{2,}(?:\.[a-z_]{2,})+")
# Upper-case words this long, or several in a row, are code or SQL, not acronyms (WAL,
# JSON, HTTP).
_LONG_UPPER = re.compile(r"[A-Z]{6,}")
_UPPER_RUN = re.compile(r"\b[A-Z]{2,}(?:[ \t]+[A-Z]{2,})+\b")
# Calendar words are capitalised but name no thing: documents write dates as 2026-02-11.
_CALENDAR = frozenset(
    "january february march april may june july august september october november december"
    " monday tuesday wednesday thursday friday saturday sunday".split()
)


def named_terms(question: str) -> list[str]:
    """The question's names: identifiers (see identifier_terms), words with an inner
    capital (PostgreSQL, MongoDB), and capitalised words that do not start a sentence.
    Bare numbers are not names: documents write them in other forms (5,432; tables
    split from their labels); nor are month and weekday names."""
    terms = []
    for sentence in _SENTENCE_END.split(question):
        for i, word in enumerate(_WORD.findall(sentence)):
            name = word.removeprefix("--")
            inner_capital = any(c.isupper() for c in name[1:])
            proper = i > 0 and name[0].isupper() and len(name) > 1 and name.lower() not in _CALENDAR
            if _is_identifier(word) or inner_capital or proper:
                terms.append(name)
    return list(dict.fromkeys(t for t in terms if not t.isdigit()))


def identifier_terms(query: str, compounds: bool = True) -> list[str]:
    """The query's identifiers, for ranking: words with an underscore or with digits
    among letters (max_wal_senders, 40P01, LEDG-5012), command-line flags (--no-owner,
    as no-owner) and lowercase hyphenated words (ledger-api, pg-ledger). Unlike a
    capitalised word, an identifier names one thing, so a text without it is about
    something else. Hyphenated words are often plain English too (read-only, on-call),
    but a text that uses the same compound is still on the question's subject, so they
    rank; they are not names (named_terms), which turn questions away, and without
    `compounds` they are left out."""
    terms = [
        word.removeprefix("--")
        for word in _WORD.findall(query)
        if _is_identifier(word) or (compounds and _is_compound(word))
    ]
    return list(dict.fromkeys(t for t in terms if not t.isdigit()))


def exact_terms(query: str) -> list[str]:
    """What in a query only an exact match finds, for choosing how to rank it: the strict
    identifiers (identifier_terms without hyphenated words), camelCase names
    (PQgetResult), dotted names (plpy.execute), calls (format()), long upper-case words
    (TRUNCATE, PGHOSTADDR) and runs of upper-case words (ALTER SYSTEM), as users write
    code and SQL. Acronyms (WAL, JSON) and capitalised words are plain language."""
    terms = identifier_terms(query, compounds=False)
    terms += [m.group() for m in _UPPER_RUN.finditer(query)]
    for match in _CODE_WORD.finditer(query):
        word = match.group()
        call = query.startswith("()", match.end())
        if call or _CAMEL.search(word) or _DOTTED.fullmatch(word) or _LONG_UPPER.fullmatch(word):
            terms.append(word)
    return list(dict.fromkeys(terms))


def normal(text: str) -> str:
    """Text as names are matched in it: lower case, letters and digits only."""
    return _NOT_ALNUM.sub("", text.lower())


def _is_identifier(word: str) -> bool:
    if word.startswith("--"):
        return len(word) > 3
    return "_" in word or (any(c.isdigit() for c in word) and any(c.isalpha() for c in word))


def _is_compound(word: str) -> bool:
    """A lowercase hyphenated word: ledger-api, risk-scorer, read-only (not a --flag)."""
    if word.startswith("--"):
        return False
    return "-" in word and word.islower()
