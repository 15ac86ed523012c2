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

from collections.abc import Iterable

from ragplane.names import named_terms, normal
from ragplane.v1 import common_pb2


def missing_terms(question: str, hits: Iterable[common_pb2.ScoredChunk]) -> list[str]:
    """The question's names that no hit's text, title or section mentions."""
    context = normal(" ".join(f"{h.chunk.title} {h.chunk.section} {h.chunk.text}" for h in hits))
    return [t for t in named_terms(question) if normal(t) not in context]
