"""What the query pipeline takes and gives, whatever the door a caller came through.

The gRPC servicer (grpc_api.py) and the HTTP routes (http/) translate their own wire
types to and from these; the pipeline (query.py) knows neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from ragplane.errors import InvalidArgument

SearchMode = Literal["dense", "keyword", "hybrid"]
FusionMethod = Literal["rrf", "weighted"]
FinishReason = Literal["stop", "length"]

COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def valid_collection(name: str, default: str) -> str:
    """The collection a request names, or the server's default; INVALID_ARGUMENT if the name
    cannot be one."""
    name = name or default
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(
            f"collection {name!r} is not a valid name (letters, digits and _, "
            "not starting with a digit)"
        )
    return name


class AbstainReason(StrEnum):
    """Why the gateway answers "I don't know" without asking the generator."""

    NO_HITS = "no_hits"
    LOW_RELEVANCE = "low_relevance"
    UNKNOWN_NAMES = "unknown_names"


@dataclass(frozen=True)
class Filter:
    """Restricts a search; empty fields do not restrict."""

    doc_ids: tuple[str, ...] = ()
    source_prefix: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fusion:
    method: FusionMethod | None = None
    rrf_k: int = 0
    dense_weight: float = 0.0
    keyword_weight: float = 0.0


@dataclass(frozen=True)
class Rerank:
    enabled: bool | None = None  # None: the server's default
    candidates: int = 0
    weight: float = 0.0


@dataclass(frozen=True)
class Retrieval:
    """Where and how to look: every field left at its default takes the server's."""

    collection: str = ""
    extra_collections: tuple[str, ...] = ()
    top_k: int = 0
    mode: SearchMode | None = None
    filter: Filter = field(default_factory=Filter)
    fusion: Fusion = field(default_factory=Fusion)
    rerank: Rerank = field(default_factory=Rerank)
    identifier_boost: bool | None = None


@dataclass(frozen=True)
class SearchQuery:
    query: str
    retrieval: Retrieval = field(default_factory=Retrieval)
    # The chunks an Ask would give the model, on which the abstain reason is judged
    # (0: the server's default top_k).
    context_top_k: int = 0


@dataclass(frozen=True)
class Turn:
    """An earlier turn of a conversation: role "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class AskQuery:
    question: str
    retrieval: Retrieval = field(default_factory=Retrieval)
    max_tokens: int = 0  # 0: the server's default
    temperature: float = 0.0
    top_p: float = 0.0  # 0: 1.0
    stop: tuple[str, ...] = ()
    # Earlier turns, oldest first: they make a follow-up's retrieval query self-contained.
    history: tuple[Turn, ...] = ()


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as retrieved, with everything needed to cite it."""

    id: str
    doc_id: str
    title: str
    source: str
    section: str
    position: int
    text: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hit:
    chunk: StoredChunk
    collection: str
    score: float
    # Query-chunk cosine whatever the mode: one scale to judge relevance by.
    relevance: float
    rerank_score: float | None = None


@dataclass(frozen=True)
class Citation:
    """A chunk given to the model, numbered as the answer cites it: [index]."""

    index: int
    hit: Hit


@dataclass
class Timings:
    embed_ms: float = 0.0
    retrieve_ms: float = 0.0
    rerank_ms: float = 0.0
    prompt_ms: float = 0.0
    time_to_first_token_ms: float = 0.0
    generate_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    abstain_reason: AbstainReason | None
    unknown_names: list[str]
    timings: Timings


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


# The events of an answer, in order: Citations once, Delta any number of times, Finished once.


@dataclass(frozen=True)
class Citations:
    citations: list[Citation]


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    abstain_reason: AbstainReason | None = None
    unknown_names: tuple[str, ...] = ()
    # The retrieval query, when earlier turns rewrote the question into it.
    retrieval_query: str = ""
    # The answer's [n] markers (markers.py): the citations they point at, in order of
    # first mention, and the numbers that point at none.
    cited_indexes: tuple[int, ...] = ()
    invalid_citations: tuple[int, ...] = ()
    # The generator stopped the answer because it kept repeating itself.
    stopped_repeating: bool = False
    # Of cited_indexes, the ones whose markers the gateway added (attribution.py).
    attributed_indexes: tuple[int, ...] = ()

    @property
    def abstained(self) -> bool:
        return self.abstain_reason is not None


AskEvent = Citations | Delta | Finished
