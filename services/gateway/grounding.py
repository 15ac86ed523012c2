"""Does the retrieved context name what the question names?

A question about something the corpus never mentions (another product, a cloud
service, a setting of another database) still finds chunks that are close in meaning,
because the corpus is about the same topic: its best cosine is no lower than that of
many answerable questions, so a relevance threshold alone cannot turn it away. The
names in the question can: when the question names a thing (a proper noun, an
identifier) and none of the retrieved chunks mentions it, the context cannot answer it.
Common words are not checked: a paraphrased question rarely uses the documents' words,
and that is what dense retrieval is for. Nor are bare numbers: documents write them in
other forms (5,432; tables split from their labels), and on the evaluation sets they
turned away answerable questions and no unanswerable one (docs/retrieval.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ragplane.v1 import common_pb2

# Words, with the inner punctuation identifiers carry: max_wal_senders, db.r6g.large,
# --no-owner (as no-owner), Wi-Fi, 40P01.
_WORD = re.compile(r"[A-Za-z0-9](?:[\w.\-]*[A-Za-z0-9])?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def named_terms(question: str) -> list[str]:
    """The question's names: identifiers (an underscore, or digits among letters, in them),
    words with an inner capital (PostgreSQL, MongoDB), and capitalised words that do not
    start a sentence."""
    terms = []
    for sentence in _SENTENCE_END.split(question):
        for i, word in enumerate(_WORD.findall(sentence)):
            if word.isdigit():
                continue
            identifier = "_" in word or any(c.isdigit() for c in word)
            inner_capital = any(c.isupper() for c in word[1:])
            proper = i > 0 and word[0].isupper() and len(word) > 1
            if identifier or inner_capital or proper:
                terms.append(word)
    return list(dict.fromkeys(terms))


def _normal(text: str) -> str:
    # Letters and digits only, so max-wal-senders finds max_wal_senders, and Wi-Fi WiFi.
    return _NOT_ALNUM.sub("", text.lower())


def missing_terms(question: str, hits: Iterable[common_pb2.ScoredChunk]) -> list[str]:
    """The question's names that no hit's text, title or section mentions."""
    context = _normal(" ".join(f"{h.chunk.title} {h.chunk.section} {h.chunk.text}" for h in hits))
    return [t for t in named_terms(question) if _normal(t) not in context]
