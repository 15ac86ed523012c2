"""Citation markers the model did not write, added by the gateway where a passage
supports the sentence (post-hoc attribution).

Small models answer from the passages but seldom write `[n]` (docs/models.md). As the
answer streams, each sentence that ends without a marker is matched against the passages
the model was given: its evidence is the words it adds to the question (the model echoes
the question, which every retrieved passage matches), and a passage supports it when it
holds most of that evidence. The best-supported passage's marker is inserted before the
sentence's closing punctuation. Sentences that carry a marker, code inside backticks,
"I don't know" and sentences with too little evidence are left alone.

Nothing is held back but one character: the stream stays a stream. The gateway reports
the passages it attributed apart from the ones the model cited (`attributed_indexes`),
so a caller can tell them apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ragplane.gateway.markers import MARKER

# The share of a sentence's evidence a passage must hold, and the fewest evidence words
# it must hold (fewer only when the sentence has fewer); docs/models.md has how they
# were chosen.
MIN_SUPPORT = 0.6
MIN_MATCHED = 2
# Fewer words than this is no sentence: a list's "1." or an abbreviation's "e.g.".
MIN_WORDS = 3

_WORD = re.compile(r"[a-z0-9]+")
_END = ".!?"
_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before
    being below between both but by can could did do does doing done down during each
    either else etc every few for from further had has have having he her here hers him
    his how however i if in into is it its itself just let like may me might more most
    much must my no nor not now of off on once one only or other our out over own per
    please same she should so some such than that the their them then there these they
    this those through to too under until up upon us use used using very via was we were
    what when where whether which while who whom whose why will with within without would
    yes yet you your""".split()
)
_DONT_KNOW = re.compile(r"\bi\s+don'?t\s+know\b", re.IGNORECASE)


def words(text: str) -> set[str]:
    """Lowercased words, a plural's s dropped; stopwords and single letters left out
    (single digits kept: numbers are facts)."""
    out = set()
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS or (len(word) == 1 and not word.isdigit()):
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.add(word)
    return out


def supporting_passage(
    sentence: str, question_words: set[str], passages: Sequence[set[str]]
) -> int | None:
    """The 1-based number of the passage that best supports the sentence, or None when
    none holds enough of what the sentence adds to the question. Ties go to the
    higher-ranked passage."""
    if len(_WORD.findall(sentence.lower())) < MIN_WORDS:
        return None
    evidence = words(sentence) - question_words
    if not evidence:
        return None
    need = min(MIN_MATCHED, len(evidence))
    best, best_matched = None, 0
    for number, passage in enumerate(passages, start=1):
        matched = len(evidence & passage)
        if matched > best_matched:
            best, best_matched = number, matched
    if best is None or best_matched < need or best_matched / len(evidence) < MIN_SUPPORT:
        return None
    return best


class Attributor:
    """Feeds on the answer's deltas and gives back the text to send, markers added.

    `feed` may hold back one closing punctuation mark until the next character says
    whether the sentence ended there; `finish` gives back what is held and attributes
    the last sentence.
    """

    def __init__(self, question: str, passages: Sequence[str]) -> None:
        self._question = words(question)
        self._passages = [words(p) for p in passages]
        self._sentence: list[str] = []  # the current sentence, as sent
        self._held = ""  # a closing mark whose sentence may have ended
        self._in_code = False
        self.attributed: list[int] = []  # passage numbers, in order of first insertion

    def feed(self, delta: str) -> str:
        out: list[str] = []
        for char in delta:
            if self._held:
                held, self._held = self._held, ""
                if char.isspace():
                    out.append(self._marker() + held)
                else:
                    out.append(held)
                    self._sentence.append(held)
            if char == "`":
                self._in_code = not self._in_code
            # An ellipsis ("ALTER SUBSCRIPTION ... SKIP") ends no sentence.
            ellipsis = char == "." and self._sentence[-1:] == ["."]
            if char in _END and not self._in_code and not ellipsis:
                self._held = char
                continue
            if char == "\n" and not self._in_code:
                out.append(self._marker() + char)
                continue
            self._sentence.append(char)
            out.append(char)
        return "".join(out)

    def finish(self) -> str:
        held, self._held = self._held, ""
        return self._marker() + held

    def _marker(self) -> str:
        sentence = "".join(self._sentence).rstrip()
        self._sentence.clear()
        # A list's intro ("Steps:") is no claim.
        if not sentence or sentence.endswith(":") or MARKER.search(sentence):
            return ""
        if _DONT_KNOW.search(sentence):  # the model abstaining cites nothing
            return ""
        number = supporting_passage(sentence, self._question, self._passages)
        if number is None:
            return ""
        if number not in self.attributed:
            self.attributed.append(number)
        # Right after the sentence's last word: "... previous [1]." (a sentence that ends
        # in spaces keeps them after the marker).
        return f" [{number}]"
